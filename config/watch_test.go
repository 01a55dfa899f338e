package config

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Waits in these tests are event-driven with a generous deadline: nothing
// asserts on how long anything took.
const deadline = 10 * time.Second

// fakeAfter hands out debounce timers that the test fires by hand.
type fakeAfter struct {
	mu     sync.Mutex
	timers []chan time.Time
	armed  chan struct{} // signalled on every arming
}

func newFakeAfter() *fakeAfter { return &fakeAfter{armed: make(chan struct{}, 100)} }

func (f *fakeAfter) after(time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	f.timers = append(f.timers, c)
	f.armed <- struct{}{}
	return c
}

func (f *fakeAfter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

func (f *fakeAfter) fire(i int) {
	f.mu.Lock()
	c := f.timers[i]
	f.mu.Unlock()
	c <- time.Now()
}

// tracer records the events a watcher read, in order.
type tracer struct {
	mu   sync.Mutex
	evs  []fsnotify.Event
	rel  []bool
	seen chan struct{}
}

func newTracer() *tracer { return &tracer{seen: make(chan struct{}, 1000)} }

func (tr *tracer) trace(ev fsnotify.Event, relevant bool) {
	tr.mu.Lock()
	tr.evs = append(tr.evs, ev)
	tr.rel = append(tr.rel, relevant)
	tr.mu.Unlock()
	tr.seen <- struct{}{}
}

// waitFor waits until an event on name has been read and returns whether any
// event on name was relevant.
func (tr *tracer) waitFor(t *testing.T, name string) bool {
	t.Helper()
	timeout := time.After(deadline)
	for {
		tr.mu.Lock()
		found, rel := false, false
		for i, ev := range tr.evs {
			if filepath.Clean(ev.Name) == name {
				found = true
				rel = rel || tr.rel[i]
			}
		}
		tr.mu.Unlock()
		if found {
			return rel
		}
		select {
		case <-tr.seen:
		case <-timeout:
			t.Fatalf("no event on %s within %v", name, deadline)
		}
	}
}

func waitChange(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case <-w.C:
	case <-time.After(deadline):
		t.Fatalf("no change reported within %v", deadline)
	}
}

func noChange(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case <-w.C:
		t.Fatal("a change was reported")
	default:
	}
}

// fakeFS is a backend whose events the test sends.
type fakeFS struct {
	ev   chan fsnotify.Event
	errs chan error
	mu   sync.Mutex
	adds []string
}

func (f *fakeFS) Add(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds = append(f.adds, name)
	return nil
}
func (f *fakeFS) Remove(string) error           { return nil }
func (f *fakeFS) Close() error                  { return nil }
func (f *fakeFS) events() <-chan fsnotify.Event { return f.ev }
func (f *fakeFS) errors() <-chan error          { return f.errs }

// A burst of events arms a fresh timer each; only the last timer reports,
// once; stale timers and irrelevant events report nothing.
func TestWatcherDebounce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	fa, tr := newFakeAfter(), newTracer()
	fs := &fakeFS{ev: make(chan fsnotify.Event), errs: make(chan error)}
	w, err := newWatcher(path, WatchOptions{After: fa.after, trace: tr.trace}, fs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !slices.Equal(fs.adds, []string{dir}) {
		t.Fatalf("watching %v, want the directory %s", fs.adds, dir)
	}
	for _, op := range []fsnotify.Op{fsnotify.Create, fsnotify.Write, fsnotify.Write, fsnotify.Rename, fsnotify.Write | fsnotify.Chmod} {
		fs.ev <- fsnotify.Event{Name: path, Op: op}
	}
	// Noise: attributes only, another file.
	fs.ev <- fsnotify.Event{Name: path, Op: fsnotify.Chmod}
	fs.ev <- fsnotify.Event{Name: filepath.Join(dir, "other.yaml"), Op: fsnotify.Write}
	marker := filepath.Join(dir, "marker")
	fs.ev <- fsnotify.Event{Name: marker, Op: fsnotify.Create}
	tr.waitFor(t, marker)
	if n := fa.count(); n != 5 {
		t.Fatalf("%d timers armed, want one per relevant event (5)", n)
	}
	for i := range 4 {
		fa.fire(i) // stale: nobody listens any more
	}
	fs.ev <- fsnotify.Event{Name: marker, Op: fsnotify.Write}
	for len(tr.seen) > 0 {
		<-tr.seen
	}
	noChange(t, w)
	fa.fire(4)
	waitChange(t, w)
	noChange(t, w)

	// An overflow means lost events: it counts as a change.
	for len(fa.armed) > 0 {
		<-fa.armed
	}
	fs.errs <- fsnotify.ErrEventOverflow
	<-fa.armed
	fa.fire(5)
	waitChange(t, w)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Attribute changes of the file are not changes.
func TestWatcherIgnoresChmod(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, "a")
	fa, tr := newFakeAfter(), newTracer()
	w, err := NewWatcher(path, WatchOptions{After: fa.after, trace: tr.trace})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, mode := range []os.FileMode{0o600, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	// Events arrive in order: once the marker's is read, the chmods' were.
	marker := filepath.Join(dir, "marker")
	writeFile(t, marker, "")
	tr.waitFor(t, marker)
	if tr.waitFor(t, path) {
		t.Fatal("a chmod counted as relevant")
	}
	if n := fa.count(); n != 0 {
		t.Fatalf("%d debounce timers armed by chmod and an unrelated file", n)
	}
	noChange(t, w)
}

// Writes in place and an editor's rename-and-replace are changes.
func TestWatcherWriteAndRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	writeFile(t, path, "a")
	w, err := NewWatcher(path, WatchOptions{Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeFile(t, path, "b")
	waitChange(t, w)

	tmp := filepath.Join(dir, ".config.yaml.swp")
	writeFile(t, tmp, "c")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitChange(t, w)

	// Removed, then created again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitChange(t, w)
	writeFile(t, path, "d")
	waitChange(t, w)
}

// kubeSwap lays out a ConfigMap volume the way the kubelet does:
// config.yaml -> ..data/config.yaml, ..data -> ..<version>, and an update
// writes a new ..<version> directory and renames a new symlink over ..data.
func kubeSwap(t *testing.T, dir, version, content string) {
	t.Helper()
	vdir := filepath.Join(dir, "..v"+version)
	if err := os.Mkdir(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vdir, "config.yaml"), content)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink("..v"+version, tmp); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "config.yaml")); err != nil {
		if err := os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml")); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatcherKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	kubeSwap(t, dir, "1", "one")
	path := filepath.Join(dir, "config.yaml")
	w, err := NewWatcher(path, WatchOptions{Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := w.watchedDirs(); !slices.Contains(got, filepath.Join(dir, "..v1")) {
		t.Fatalf("watching %v, want the resolved directory too", got)
	}
	for i, v := range []string{"2", "3"} {
		kubeSwap(t, dir, v, "content "+v)
		waitChange(t, w)
		data, err := ReadFile(path)
		if err != nil || string(data) != "content "+v {
			t.Fatalf("swap %d: read %q %v", i, data, err)
		}
		got := w.watchedDirs()
		if !slices.Contains(got, filepath.Join(dir, "..v"+v)) || len(got) != 2 {
			t.Fatalf("after swap to v%s watching %v", v, got)
		}
	}
	// An edit of the resolved file itself is seen too.
	writeFile(t, filepath.Join(dir, "..v3", "config.yaml"), "edited")
	waitChange(t, w)
}

// A symlink to a file in another directory: edits there are seen, and so
// is pointing the link elsewhere.
func TestWatcherSymlinkElsewhere(t *testing.T) {
	root := t.TempDir()
	cfgDir, realDir := filepath.Join(root, "etc"), filepath.Join(root, "real")
	for _, d := range []string{cfgDir, realDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(realDir, "a.yaml"), "a")
	writeFile(t, filepath.Join(realDir, "b.yaml"), "b")
	path := filepath.Join(cfgDir, "config.yaml")
	if err := os.Symlink(filepath.Join(realDir, "a.yaml"), path); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(path, WatchOptions{Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeFile(t, filepath.Join(realDir, "a.yaml"), "a2")
	waitChange(t, w)
	// Re-point the link by rename.
	tmp := filepath.Join(cfgDir, "tmp-link")
	if err := os.Symlink(filepath.Join(realDir, "b.yaml"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitChange(t, w)
	writeFile(t, filepath.Join(realDir, "b.yaml"), "b2")
	waitChange(t, w)
}

// clear forgets the events read so far.
func (tr *tracer) clear() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.evs, tr.rel = nil, nil
}

// watching waits until dir is among the watched directories.
func watching(t *testing.T, w *Watcher, dir string) {
	t.Helper()
	timeout := time.After(deadline)
	for !slices.Contains(w.watchedDirs(), dir) {
		select {
		case <-timeout:
			t.Fatalf("%s not watched again within %v (watching %v)", dir, deadline, w.watchedDirs())
		case <-time.After(time.Millisecond): // polls the watcher's state, not the clock
		}
	}
}

// A directory the watcher needs, deleted and created again (the path's own
// directory, or the one a symlink resolves into), is watched again: the
// removal and the return are reported as changes, and edits after the
// return are seen.
func TestWatcherDirectoryDeletedAndRecreated(t *testing.T) {
	for _, tc := range []struct {
		name    string
		symlink bool
	}{{"path's directory", false}, {"symlink target's directory", true}} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cfgDir, realDir := filepath.Join(root, "etc"), filepath.Join(root, "real")
			path := filepath.Join(cfgDir, "config.yaml")
			gone, file := cfgDir, path // the directory deleted, the file edited
			if err := os.Mkdir(cfgDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.symlink {
				gone, file = realDir, filepath.Join(realDir, "a.yaml")
				if err := os.Mkdir(realDir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(file, path); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, file, "v1")
			tr := newTracer()
			w, err := newWatcherOS(path, WatchOptions{Debounce: 10 * time.Millisecond, Retry: 10 * time.Millisecond, trace: tr.trace})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			watching(t, w, gone)

			if err := os.RemoveAll(gone); err != nil {
				t.Fatal(err)
			}
			waitChange(t, w)
			if err := os.Mkdir(gone, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, file, "v2")
			waitChange(t, w)
			watching(t, w, gone)
			for len(w.C) > 0 {
				<-w.C
			}
			tr.clear()
			writeFile(t, file, "v3")
			if !tr.waitFor(t, file) && !tr.waitFor(t, path) {
				t.Fatal("the edit after the directory came back was not relevant")
			}
			waitChange(t, w)
		})
	}
}

// newWatcherOS is NewWatcher with the unexported options tests set.
func newWatcherOS(path string, opts WatchOptions) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w, err := newWatcher(path, opts, fsnotifyBackend{fw})
	if err != nil {
		fw.Close()
	}
	return w, err
}
