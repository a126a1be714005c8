package server

import "net/netip"

// ThrottleFail counts a failed Basic login of user from client on t.
func ThrottleFail(t *LoginThrottle, client netip.Addr, user string) {
	t.Fail(keysOf(client, user, user != ""))
}
