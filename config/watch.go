package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long a Watcher waits for the file to settle.
const DefaultDebounce = 200 * time.Millisecond

// DefaultRetry is how often a Watcher retries watching a directory that is
// gone.
const DefaultRetry = 5 * time.Second

// WatchOptions configure a Watcher. The zero value is usable.
type WatchOptions struct {
	// Debounce is how long no relevant event may arrive before the watcher
	// reports a change: an editor's save or a ConfigMap update is several
	// events, and the file is read once they have settled. Default
	// DefaultDebounce.
	Debounce time.Duration
	// After returns a channel that receives once d has passed; the watcher
	// uses it for the debounce timer. Default time.After. Tests inject one
	// they fire by hand.
	After func(d time.Duration) <-chan time.Time
	// Logger receives watch errors (an event queue overflow, a directory
	// that cannot be watched). Default: discard.
	Logger *slog.Logger
	// Retry is how often the watcher tries again to watch a directory it
	// needs that is gone (deleted, or not created yet): a directory removed
	// and created again is watched again within Retry, and the file is
	// reported as changed then. Default DefaultRetry.
	Retry time.Duration

	// trace, when set, is told about every event read and whether it was
	// relevant, before the watcher acts on it (tests).
	trace func(ev fsnotify.Event, relevant bool)
	// dir watches a directory (NewDirWatcher).
	dir bool
}

// Watcher reports changes of one configuration file. It survives the ways
// files get replaced in practice:
//
//   - written in place (truncate and write): Write events on the file;
//   - an editor's save by rename (write a temporary file, rename it over the
//     path): Create or Rename of the path's name in its directory;
//   - a Kubernetes ConfigMap update, where the path is a symlink
//     (config.yaml -> ..data/config.yaml) and ..data is a symlink swapped
//     atomically to a new timestamped directory: Create of ..data;
//   - a symlink to a file elsewhere that is edited there.
//
// It watches the directory of the path, not the file (a watch on a file
// dies with the inode an editor replaces), and the directory of the path
// the symlinks resolve to. After each change it resolves the path again and
// moves the second watch if the target moved. A watched directory that is
// removed (its watch dies with it) counts as a change; while a directory it
// needs cannot be watched, it retries every WatchOptions.Retry and reports
// a change once the watch is back, so a directory deleted and created again
// is followed too. Relevant events are those
// that create, write, remove or rename the path, its resolved target, or the
// first element of a relative symlink target in the path's directory
// (..data); attribute changes alone (chmod, touch) are not. A change is
// reported once no relevant event has arrived for the debounce interval.
//
// The Watcher reports that the file may have changed, not that it did: the
// receiver reads the file and compares its content (Version) with the one in
// force. A queue overflow is reported as a change, since events were lost.
//
// Create it with NewWatcher and stop it with Close. C is safe to receive
// from one goroutine.
type Watcher struct {
	// C receives a value when the file may have changed. It has a buffer of
	// one and the watcher never blocks on it: changes that arrive while a
	// value is pending are coalesced into it.
	C <-chan struct{}

	path string // absolute, as given (not resolved)
	dir  bool   // path is a directory: any change of a file in it counts
	opts WatchOptions
	fs   fsBackend
	c    chan struct{}

	mu      sync.Mutex // guards the fields below (read by tests)
	watched map[string]bool
	names   map[string]bool // relevant absolute paths
	missing bool            // a directory needed could not be watched

	done chan struct{}
	once sync.Once
}

// fsBackend is the part of *fsnotify.Watcher the Watcher uses.
type fsBackend interface {
	Add(name string) error
	Remove(name string) error
	Close() error
	events() <-chan fsnotify.Event
	errors() <-chan error
}

type fsnotifyBackend struct{ *fsnotify.Watcher }

func (b fsnotifyBackend) events() <-chan fsnotify.Event { return b.Events }
func (b fsnotifyBackend) errors() <-chan error          { return b.Errors }

// NewWatcher starts watching the file at path. It fails when the path's
// directory cannot be watched (it does not exist, or inotify is out of
// watches); the file itself need not exist yet.
func NewWatcher(path string, opts WatchOptions) (*Watcher, error) {
	return watchNew(path, false, opts)
}

// NewDirWatcher watches a directory of configuration files (an
// envoyproxy/ratelimit configuration): any file of it created, written,
// removed or renamed counts as a change, and so does a swap of a Kubernetes
// ConfigMap's ..data link in it. The directory must exist.
func NewDirWatcher(path string, opts WatchOptions) (*Watcher, error) {
	return watchNew(path, true, opts)
}

func watchNew(path string, dir bool, opts WatchOptions) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("config: watch %s: %w", path, err)
	}
	opts.dir = dir
	w, err := newWatcher(path, opts, fsnotifyBackend{fw})
	if err != nil {
		fw.Close()
		return nil, err
	}
	return w, nil
}

func newWatcher(path string, opts WatchOptions, fs fsBackend) (*Watcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: watch %s: %w", path, err)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, path: abs, dir: opts.dir, opts: opts, fs: fs, watched: map[string]bool{}, done: make(chan struct{})}
	first := filepath.Dir(abs)
	if w.dir {
		first = abs
	}
	if err := fs.Add(first); err != nil {
		return nil, fmt.Errorf("config: watch directory of %s: %w", path, err)
	}
	w.watched[first] = true
	w.resolve()
	go w.loop()
	return w, nil
}

// Close stops the watcher. It is safe to call more than once.
func (w *Watcher) Close() error {
	var err error
	w.once.Do(func() {
		close(w.done)
		err = w.fs.Close()
	})
	return err
}

// loop reads events until Close. timer is the pending debounce, nil when
// none: every relevant event arms a fresh one, and the previous one's
// channel is dropped, so only the last of a burst fires. A burst re-arms at
// most maxRearms times, so a file rewritten faster than the debounce forever
// is still reloaded (within about maxRearms events of the first).
func (w *Watcher) loop() {
	var timer, retry <-chan time.Time
	rearms := 0
	events, errs := w.fs.events(), w.fs.errors()
	for {
		if retry == nil && w.isMissing() {
			retry = w.opts.After(w.opts.Retry)
		}
		select {
		case <-w.done:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			rel := w.relevant(ev)
			if w.opts.trace != nil {
				w.opts.trace(ev, rel)
			}
			if rel && (timer == nil || rearms < maxRearms) {
				timer = w.opts.After(w.opts.Debounce)
				rearms++
			}
		case err, ok := <-errs:
			if !ok {
				return
			}
			w.opts.Logger.Warn("config watch error; will re-read the file", "config", w.path, "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				timer = w.opts.After(w.opts.Debounce)
			}
		case <-timer:
			timer, rearms = nil, 0
			w.resolve()
			w.report()
		case <-retry:
			retry = nil
			if w.resolve() { // every directory watched again
				w.report()
			}
		}
	}
}

// report tells the receiver that the file may have changed, without
// blocking: a value already pending stands for this one too.
func (w *Watcher) report() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

func (w *Watcher) isMissing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.missing
}

// maxRearms bounds how often one burst of events postpones its reload.
const maxRearms = 16

const changeOps = fsnotify.Create | fsnotify.Write | fsnotify.Remove | fsnotify.Rename

// relevant reports whether ev may change what the path reads. The removal
// or rename of a watched directory is: its watch is gone (a renamed
// directory's watch follows it elsewhere, so it is dropped), and the next
// resolve watches the path again if it exists.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	if !ev.Op.Has(changeOps) {
		return false
	}
	name := filepath.Clean(ev.Name)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watched[name] && ev.Op.Has(fsnotify.Remove|fsnotify.Rename) {
		w.fs.Remove(name) // it may be gone already: nothing to undo then
		delete(w.watched, name)
		return true
	}
	if w.dir {
		return w.watched[filepath.Dir(name)]
	}
	return w.names[name]
}

// resolve recomputes the relevant names and the watched directories: the
// path's directory always, plus the directory of the file the path
// resolves to, when that is elsewhere. It reports whether every directory
// needed is watched, after a time when some was not.
func (w *Watcher) resolve() (restored bool) {
	names := map[string]bool{w.path: true}
	dirs := map[string]bool{filepath.Dir(w.path): true}
	if w.dir {
		// The directory itself, and where it resolves to.
		dirs = map[string]bool{w.path: true}
		if real, err := filepath.EvalSymlinks(w.path); err == nil {
			dirs[real] = true
		}
		return w.watchDirs(names, dirs)
	}
	// Follow the symlink chain of the last element, noting each hop and,
	// for a relative target, its first element in the link's directory
	// (Kubernetes' ..data).
	p := w.path
	for range 40 {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			first, _, _ := strings.Cut(filepath.ToSlash(target), "/")
			names[filepath.Join(filepath.Dir(p), first)] = true
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
		names[p] = true
	}
	if real, err := filepath.EvalSymlinks(w.path); err == nil {
		names[real] = true
		dirs[filepath.Dir(real)] = true
	} else {
		// A dangling link: watch where its target would be, so that the
		// target's return is seen (retried while that directory is gone).
		dirs[filepath.Dir(p)] = true
	}
	return w.watchDirs(names, dirs)
}

// watchDirs makes names the relevant names and dirs the watched
// directories (see resolve).
func (w *Watcher) watchDirs(names, dirs map[string]bool) (restored bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.names = names
	for d := range w.watched {
		if !dirs[d] {
			w.fs.Remove(d) // it may be gone already: nothing to undo then
			delete(w.watched, d)
		}
	}
	missing := false
	for d := range dirs {
		if w.watched[d] {
			continue
		}
		if err := w.fs.Add(d); err != nil {
			if !w.missing { // once per outage, not on every retry
				w.opts.Logger.Warn("config watch: cannot watch a directory; retrying", "dir", d, "every", w.opts.Retry.String(), "err", err)
			}
			missing = true
			continue
		}
		w.watched[d] = true
	}
	restored = w.missing && !missing
	if restored {
		w.opts.Logger.Info("config watch: watching again", "config", w.path)
	}
	w.missing = missing
	return restored
}

// watchedDirs returns the directories being watched (tests).
func (w *Watcher) watchedDirs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for d := range w.watched {
		out = append(out, d)
	}
	return out
}
