package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/videoworker/videoworker/internal/s3test"
)

func TestConfigS3(t *testing.T) {
	const secret = "s3cr3t-never-shown"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // named in the error; none: valid
	}{
		{"minimal", map[string]string{"STORAGE_URL": "s3://videos/prefix"}, nil},
		{"query", map[string]string{"STORAGE_URL": "s3://videos?endpoint=http://minio:9000&path_style=true&region=us-east-1"}, nil},
		{"half a pair", map[string]string{"STORAGE_URL": "s3://videos", "S3_ACCESS_KEY_ID": "AK"}, []string{"S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"}},
		{"half an AWS pair", map[string]string{"STORAGE_URL": "s3://videos", "AWS_SECRET_ACCESS_KEY": secret}, []string{"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"}},
		{"credentials in the URL", map[string]string{"STORAGE_URL": "s3://AK:" + secret + "@videos"}, []string{"STORAGE_URL", "credentials"}},
		{"bad bucket", map[string]string{"STORAGE_URL": "s3://No_Such"}, []string{"STORAGE_URL", "bucket"}},
		{"bad endpoint", map[string]string{"STORAGE_URL": "s3://videos", "S3_ENDPOINT": "ftp://x"}, []string{"STORAGE_URL", "endpoint"}},
		{"bad part size", map[string]string{"STORAGE_URL": "s3://videos", "S3_PART_SIZE_MIB": "4"}, []string{"S3_PART_SIZE_MIB"}},
		{"bad bool", map[string]string{"STORAGE_URL": "s3://videos", "S3_PATH_STYLE": "maybe"}, []string{"S3_PATH_STYLE"}},
		{"unknown scheme", map[string]string{"STORAGE_URL": "gs://videos"}, []string{"STORAGE_URL", `"gs"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows a secret:\n%v", err)
			}
		})
	}
}

func TestConfigS3Credentials(t *testing.T) {
	t.Setenv("STORAGE_URL", "s3://videos")
	t.Setenv("AWS_ACCESS_KEY_ID", "aws-ak")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-sk")
	t.Setenv("AWS_SESSION_TOKEN", "aws-token")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	s3 := cfg.storageOptions().S3
	if s3.AccessKey != "aws-ak" || s3.SecretKey != "aws-sk" || s3.SessionToken != "aws-token" || !s3.UseSSL || s3.PathStyle || s3.PartSize != 16<<20 {
		t.Errorf("from AWS_ names: %v (part size %d)", s3, s3.PartSize)
	}
	t.Setenv("S3_ACCESS_KEY_ID", "s3-ak")
	t.Setenv("S3_SECRET_ACCESS_KEY", "s3-sk")
	t.Setenv("S3_USE_SSL", "false")
	t.Setenv("S3_PATH_STYLE", "true")
	if cfg, err = loadConfig(); err != nil {
		t.Fatal(err)
	}
	s3 = cfg.storageOptions().S3
	if s3.AccessKey != "s3-ak" || s3.SecretKey != "s3-sk" || s3.SessionToken != "" || s3.UseSSL || !s3.PathStyle {
		t.Errorf("S3_ names take precedence (and the AWS session token stays with its pair): %v", s3)
	}
}

// TestDemoS3 runs the demo against a real S3 server configured the way a
// user would, through the environment.
func TestDemoS3(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	for k, v := range map[string]string{
		"STORAGE_URL": "s3://" + bucket + "/demo", "S3_ENDPOINT": srv.URL(), "S3_PATH_STYLE": "true", "S3_REGION": s3test.Region,
		"S3_ACCESS_KEY_ID": s3test.AccessKey, "S3_SECRET_ACCESS_KEY": s3test.SecretKey,
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"REDIS_URL", "AISTATS_API_KEY"} { // the demo's embedded Redis and stand-in API
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"demo", "-jobs", "4", "-exit-when-done", "-quiet"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "\n4 stored, 0 failed\n") {
		t.Errorf("summary line missing:\n%s", out.String())
	}
	var n int
	for o := range srv.Client().Client.ListObjects(t.Context(), bucket, minio.ListObjectsOptions{Prefix: "demo/videos/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		st, err := srv.Client().StatObject(t.Context(), bucket, o.Key, minio.StatObjectOptions{})
		if err != nil || len(st.Metadata.Get("X-Amz-Meta-Sha256")) != 64 || st.Metadata.Get("X-Amz-Meta-Job_id") == "" {
			t.Errorf("object %s: metadata %v, %v; want sha256 and job_id", o.Key, st.Metadata, err)
		}
		n++
	}
	if n != 4 {
		t.Errorf("%d videos stored under s3://%s/demo/videos/, want 4", n, bucket)
	}
	if ups, err := srv.IncompleteUploads(t.Context(), bucket); err != nil || len(ups) != 0 {
		t.Errorf("incomplete uploads = %v, %v", ups, err)
	}
}
