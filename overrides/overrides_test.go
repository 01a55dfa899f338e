package overrides_test

import (
	"context"
	"errors"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/overrides/overridestest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

var t0 = overridestest.T0

func ov(ns, subject string, lim int64, expires time.Time) policy.Override {
	return overridestest.Override(ns, subject, lim, expires)
}

func subjects(list []policy.Override) []string { return overridestest.Subjects(list) }

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overrides.json")
	s, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	overridestest.Conformance(t, s)
	// A restart reads back the same overrides.
	s2, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"orders", "payments"} {
		a, _ := s.Load(context.Background(), ns)
		b, _ := s2.Load(context.Background(), ns)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s after reopening:\n%+v\n%+v", ns, a, b)
		}
	}
	// No temporary file is left behind; the file is private.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %v", entries)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestFileStoreInMemory(t *testing.T) {
	s, err := overrides.OpenFile("")
	if err != nil {
		t.Fatal(err)
	}
	overridestest.Conformance(t, s)
}

func TestFileStoreRefusesACorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":         "{not json",
		"unknown version": `{"version":2,"overrides":[]}`,
		"unknown field":   `{"version":1,"overrides":[],"extra":1}`,
		"bad override":    `{"version":1,"overrides":[{"namespace":"orders","subject":"u","override":{"limits":{}}}]}`,
		"bad algorithm":   `{"version":1,"overrides":[{"namespace":"orders","subject":"u","override":{"limits":{"r":{"algorithm":"nope"}}}}]}`,
		"empty subject":   `{"version":1,"overrides":[{"namespace":"orders","subject":"","override":{"limits":{"r":{"limit":1}}}}]}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := overrides.OpenFile(path); !errors.Is(err, overrides.ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A failed write leaves the store as it was.
func TestFileStoreWriteFailureKeepsState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "overrides.json")
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	s, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, ov("orders", "a", 1, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "sub"))
	if err := s.Put(ctx, ov("orders", "b", 1, time.Time{}), 10); !errors.Is(err, overrides.ErrUnavailable) {
		t.Fatalf("put into a missing directory: %v", err)
	}
	if ok, err := s.Delete(ctx, "orders", "a"); ok || !errors.Is(err, overrides.ErrUnavailable) {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if got, _ := s.Load(ctx, "orders"); !reflect.DeepEqual(subjects(got), []string{"a"}) {
		t.Fatalf("state after failures: %v", subjects(got))
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, data := range []string{
		``, `null`, `[]`, `{"limits":null}`, `{"limits":{"a":{"limit":1}},"x":1}`,
		`{"limits":{"a":{"period_ms":-1}}}`, `{"limits":{"a":{"limit":1}},"expires_at_ms":-5}`,
		`{"limits":{"a":{"limit":"ten"}}}`,
	} {
		if _, err := overrides.Unmarshal("n", "s", []byte(data)); !errors.Is(err, overrides.ErrCorrupt) {
			t.Errorf("overrides.Unmarshal(%s): %v", data, err)
		}
	}
}
