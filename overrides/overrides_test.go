package overrides

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ov(ns, subject string, lim int64, expires time.Time) policy.Override {
	return policy.Override{Namespace: ns, Subject: subject, ExpiresAt: expires,
		Limits:    map[string]policy.Patch{"per-minute": {Limit: lim, Burst: 7, Period: 2 * time.Minute, Algorithm: limit.LeakyBucket}},
		UpdatedAt: t0,
	}
}

func subjects(list []policy.Override) []string {
	var out []string
	for _, o := range list {
		out = append(out, o.Subject)
	}
	return out
}

// conformance runs the same sequence against any Store.
func conformance(t *testing.T, s Store) {
	ctx := context.Background()
	if got, err := s.Load(ctx, "orders"); err != nil || len(got) != 0 {
		t.Fatalf("empty load: %v %v", got, err)
	}
	want := ov("orders", "user-42", 500, t0.Add(time.Hour))
	for _, o := range []policy.Override{want, ov("orders", "a b/c", 1, time.Time{}), ov("payments", "user-42", 2, time.Time{})} {
		if err := s.Put(ctx, o, 3); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load(ctx, "orders")
	if err != nil || !reflect.DeepEqual(subjects(got), []string{"a b/c", "user-42"}) {
		t.Fatalf("load: %v %v", subjects(got), err)
	}
	if !reflect.DeepEqual(got[1], want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got[1], want)
	}
	// Replacing does not count against the maximum; a new subject does.
	if err := s.Put(ctx, ov("orders", "user-42", 600, time.Time{}), 2); err != nil {
		t.Fatalf("replace at the maximum: %v", err)
	}
	if err := s.Put(ctx, ov("orders", "third", 1, time.Time{}), 2); !errors.Is(err, ErrTooMany) {
		t.Fatalf("over the maximum: %v", err)
	}
	if ok, err := s.Delete(ctx, "orders", "a b/c"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := s.Delete(ctx, "orders", "a b/c"); ok || err != nil {
		t.Fatalf("delete again: %v %v", ok, err)
	}
	// Expiry removes only what has expired.
	s.Put(ctx, ov("orders", "short", 1, t0.Add(time.Second)), 10)
	s.Put(ctx, ov("orders", "long", 1, t0.Add(time.Hour)), 10)
	if err := s.DeleteExpired(ctx, "orders", []string{"short", "long", "user-42", "missing"}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Load(ctx, "orders")
	if !reflect.DeepEqual(subjects(got), []string{"long", "user-42"}) {
		t.Fatalf("after expiry: %v", subjects(got))
	}
	if got, _ := s.Load(ctx, "payments"); len(got) != 1 {
		t.Fatalf("payments: %v", got)
	}
	if err := s.Put(ctx, ov("", "x", 1, time.Time{}), 10); err == nil {
		t.Fatal("empty namespace accepted")
	}
}

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overrides.json")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, s)
	// A restart reads back the same overrides.
	s2, err := OpenFile(path)
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
	s, err := OpenFile("")
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, s)
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
		if _, err := OpenFile(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A failed write leaves the store as it was.
func TestFileStoreWriteFailureKeepsState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "overrides.json")
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, ov("orders", "a", 1, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "sub"))
	if err := s.Put(ctx, ov("orders", "b", 1, time.Time{}), 10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("put into a missing directory: %v", err)
	}
	if ok, err := s.Delete(ctx, "orders", "a"); ok || !errors.Is(err, ErrUnavailable) {
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
		if _, err := decode("n", "s", []byte(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode(%s): %v", data, err)
		}
	}
}
