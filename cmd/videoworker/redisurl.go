package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisTarget is a parsed REDIS_URL: one of the three deployments asynq
// supports.
type redisTarget struct {
	kind     string // "standalone", "sentinel" or "cluster"
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// parseRedisURL reads REDIS_URL:
//
//	redis://[user:password@]host:port[/db]            standalone (rediss:// for TLS)
//	redis-sentinel://[user:password@]h1:p1,h2:p2/master[/db][?sentinel_password=…]
//	redis-cluster://[user:password@]h1:p1,h2:p2       Redis Cluster (rediss-cluster:// for TLS)
func parseRedisURL(raw string) (redisTarget, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return redisTarget{}, errors.New("want redis://, rediss://, redis-sentinel:// or redis-cluster://")
	}
	switch scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(raw)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the message without the URL and its password
			}
			return redisTarget{}, errors.New(redactErr(err.Error(), raw))
		}
		return redisTarget{kind: "standalone", single: o}, nil
	case "redis-sentinel", "rediss-sentinel":
		u, hosts, err := multiHost(raw)
		if err != nil {
			return redisTarget{}, err
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if parts[0] == "" {
			return redisTarget{}, errors.New("redis-sentinel:// needs the master name as the path, e.g. redis-sentinel://s1:26379,s2:26379/mymaster")
		}
		fo := &redis.FailoverOptions{MasterName: parts[0], SentinelAddrs: hosts,
			SentinelPassword: u.Query().Get("sentinel_password")}
		if len(parts) > 1 {
			if fo.DB, err = strconv.Atoi(parts[1]); err != nil {
				return redisTarget{}, fmt.Errorf("database %q is not a number", parts[1])
			}
		}
		if u.User != nil {
			fo.Username = u.User.Username()
			fo.Password, _ = u.User.Password()
		}
		if scheme == "rediss-sentinel" {
			fo.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return redisTarget{kind: "sentinel", failover: fo}, nil
	case "redis-cluster", "rediss-cluster":
		u, hosts, err := multiHost(raw)
		if err != nil {
			return redisTarget{}, err
		}
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return redisTarget{}, errors.New("a Redis Cluster has only database 0")
		}
		co := &redis.ClusterOptions{Addrs: hosts}
		if u.User != nil {
			co.Username = u.User.Username()
			co.Password, _ = u.User.Password()
		}
		if scheme == "rediss-cluster" {
			co.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return redisTarget{kind: "cluster", cluster: co}, nil
	}
	return redisTarget{}, fmt.Errorf("unknown scheme %q: want redis, rediss, redis-sentinel or redis-cluster", scheme)
}

// multiHost parses a URL whose host part is a comma-separated list.
func multiHost(raw string) (*url.URL, []string, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	userinfo, hostpath := "", rest
	if at := strings.LastIndex(rest, "@"); at >= 0 && at < strings.IndexAny(rest+"/", "/") {
		userinfo, hostpath = rest[:at+1], rest[at+1:]
	}
	hostList, path, _ := strings.Cut(hostpath, "/")
	path, query, _ := strings.Cut(path, "?")
	var hosts []string
	for _, h := range strings.Split(hostList, ",") {
		if h = strings.TrimSpace(h); h != "" {
			if !strings.Contains(h, ":") {
				return nil, nil, fmt.Errorf("host %q needs a port", h)
			}
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return nil, nil, errors.New("no hosts")
	}
	u, err := url.Parse(scheme + "://" + userinfo + "placeholder/" + path + "?" + query)
	if err != nil {
		return nil, nil, errors.New("malformed URL")
	}
	return u, hosts, nil
}

// client opens the Redis client of the target.
func (t redisTarget) client() redis.UniversalClient {
	switch t.kind {
	case "sentinel":
		return redis.NewFailoverClient(t.failover)
	case "cluster":
		return redis.NewClusterClient(t.cluster)
	}
	return redis.NewClient(t.single)
}

// addr describes the target for logs and errors (no password).
func (t redisTarget) addr() string {
	switch t.kind {
	case "sentinel":
		return "sentinel " + strings.Join(t.failover.SentinelAddrs, ",") + " master " + t.failover.MasterName
	case "cluster":
		return "cluster " + strings.Join(t.cluster.Addrs, ",")
	}
	return t.single.Addr
}

// redactErr keeps a URL's password out of an error message.
func redactErr(msg, raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}
