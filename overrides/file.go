package overrides

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// maxFile bounds the overrides file FileStore reads, in bytes.
const maxFile = 256 << 20

// FileStore keeps overrides in memory and, when it has a path, in a JSON
// file that every change rewrites atomically: a crash leaves either the old
// file or the new one, never a mix. It suits one instance with the memory
// store; it has no other writers, so Watch only waits. The file is owned by
// the process: editing it while the process runs loses the edit at the next
// change (use the admin API).
//
// The file is one JSON object:
//
//	{"version":1,"overrides":[{"namespace":"orders","subject":"user-42","override":{...}}]}
//
// where each "override" is the stored form RedisStore also keeps.
type FileStore struct {
	path string // "" keeps overrides in memory only

	mu sync.Mutex
	m  map[string]map[string]policy.Override // namespace -> subject -> override
}

type fileDoc struct {
	Version   int         `json:"version"`
	Overrides []fileEntry `json:"overrides"`
}

type fileEntry struct {
	Namespace string          `json:"namespace"`
	Subject   string          `json:"subject"`
	Override  json.RawMessage `json:"override"`
}

// OpenFile returns a FileStore on path, reading the overrides the file
// holds; a file that does not exist yet is an empty store. path "" keeps
// the overrides in memory only (lost on restart). A file that does not
// decode is an error wrapping ErrCorrupt: refusing to start is better than
// starting without the overrides and overwriting them at the next change.
func OpenFile(path string) (*FileStore, error) {
	s := &FileStore{path: path, m: map[string]map[string]policy.Override{}}
	if path == "" {
		return s, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("overrides: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("overrides: read %s: %w", path, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("overrides: %s: %w: larger than %d bytes", path, ErrCorrupt, maxFile)
	}
	var doc fileDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("overrides: %s: %w: %v", path, ErrCorrupt, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("overrides: %s: %w: version %d, want 1", path, ErrCorrupt, doc.Version)
	}
	for i, e := range doc.Overrides {
		if err := CheckKey(e.Namespace, e.Subject); err != nil {
			return nil, fmt.Errorf("overrides: %s: %w: overrides[%d]: %v", path, ErrCorrupt, i, err)
		}
		o, err := Unmarshal(e.Namespace, e.Subject, e.Override)
		if err != nil {
			return nil, fmt.Errorf("overrides: %s: overrides[%d]: %w", path, i, err)
		}
		s.set(o)
	}
	return s, nil
}

// Path returns the file the store writes, "" when in memory only.
func (s *FileStore) Path() string { return s.path }

func (s *FileStore) set(o policy.Override) {
	m := s.m[o.Namespace]
	if m == nil {
		m = map[string]policy.Override{}
		s.m[o.Namespace] = m
	}
	m[o.Subject] = o
}

// Load implements Store.
func (s *FileStore) Load(_ context.Context, ns string) ([]policy.Override, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]policy.Override, 0, len(s.m[ns]))
	for _, o := range s.m[ns] {
		out = append(out, o)
	}
	SortBySubject(out)
	return out, nil
}

// Put implements Store. The change is in memory only once the file is
// written.
func (s *FileStore) Put(_ context.Context, o policy.Override, max int) error {
	if err := CheckKey(o.Namespace, o.Subject); err != nil {
		return err
	}
	if _, err := Marshal(o); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m[o.Namespace]
	if _, ok := m[o.Subject]; !ok && len(m) >= max {
		return fmt.Errorf("overrides: %w: namespace %s holds %d (the maximum)", ErrTooMany, o.Namespace, len(m))
	}
	old, had := m[o.Subject]
	s.set(o)
	if err := s.writeLocked(); err != nil {
		if had {
			s.m[o.Namespace][o.Subject] = old
		} else {
			delete(s.m[o.Namespace], o.Subject)
		}
		return err
	}
	return nil
}

// Delete implements Store.
func (s *FileStore) Delete(_ context.Context, ns, subject string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.m[ns][subject]
	if !ok {
		return false, nil
	}
	delete(s.m[ns], subject)
	if err := s.writeLocked(); err != nil {
		s.m[ns][subject] = old
		return false, err
	}
	return true, nil
}

// DeleteExpired implements Store.
func (s *FileStore) DeleteExpired(_ context.Context, ns string, subjects []string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := map[string]policy.Override{}
	for _, subj := range subjects {
		if o, ok := s.m[ns][subj]; ok && o.Expired(now) {
			removed[subj] = o
			delete(s.m[ns], subj)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	if err := s.writeLocked(); err != nil {
		for subj, o := range removed {
			s.m[ns][subj] = o
		}
		return err
	}
	return nil
}

// Watch implements Store: a FileStore has no other writers.
func (s *FileStore) Watch(ctx context.Context, _ func() []string, _ func(string)) { NoWatch(ctx) }

// writeLocked rewrites the file from s.m: a temporary file in the same
// directory, synced, renamed over the path, and the directory synced so
// that the rename survives a crash.
func (s *FileStore) writeLocked() error {
	if s.path == "" {
		return nil
	}
	doc := fileDoc{Version: 1, Overrides: []fileEntry{}}
	nss := make([]string, 0, len(s.m))
	for ns := range s.m {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		subjects := make([]string, 0, len(s.m[ns]))
		for subj := range s.m[ns] {
			subjects = append(subjects, subj)
		}
		sort.Strings(subjects)
		for _, subj := range subjects {
			data, err := Marshal(s.m[ns][subj])
			if err != nil {
				return err
			}
			doc.Overrides = append(doc.Overrides, fileEntry{Namespace: ns, Subject: subj, Override: data})
		}
	}
	data, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return fmt.Errorf("overrides: encode: %w", err)
	}
	data = append(data, '\n')
	if err := writeAtomic(s.path, data); err != nil {
		return fmt.Errorf("overrides: %w: %w", ErrUnavailable, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

var _ Store = (*FileStore)(nil)
