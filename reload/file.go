package reload

import (
	"fmt"
	"maps"
	"strings"
)

// Reload reads the configuration file and, if it validates, makes it the
// policy in force with the runtime overrides on top. Unless force is set, a
// file whose content (or read error) is the same as at the last attempt is
// not reloaded: the watcher reports events, not changes. On failure the
// running policy stays, one error naming every problem is logged and
// counted, and the error (wrapping ErrReload) is returned.
//
// A namespace the new file adds has its overrides loaded from the store
// (in the background); one it drops is forgotten here, and loaded again if
// a later file brings it back.
func (c *Controller) Reload(force bool) error {
	if c.source.Empty() {
		return ErrNoFile
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	key, snap, err := c.source.Read(now)
	if !force && key == c.lastKey {
		return nil
	}
	c.lastKey = key
	s := c.state.Load()
	if err != nil {
		c.rec.Reloaded(false)
		c.log.Error("reload failed; keeping the running configuration", "config", c.source.String(),
			"version", s.current.Version(), "err", err)
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	ovs := maps.Clone(s.overrides)
	for ns := range ovs {
		if _, ok := snap.Namespace(ns); !ok {
			delete(ovs, ns)
		}
	}
	var added []string
	for _, ns := range snap.Names() {
		if _, loaded := ovs[ns]; !loaded {
			added = append(added, ns)
		}
	}
	c.publish(snap, ovs, now)
	c.dirty.add(added...)
	if len(added) > 0 {
		signal(c.wake)
	}
	c.rec.Reloaded(true)
	c.rec.ConfigLoaded(snap.Version(), snap.LoadedAt())
	c.log.Info("configuration reloaded", "config", c.source.String(), "version", snap.Version(), "previous", s.base.Version(),
		"namespaces", strings.Join(snap.Names(), ","))
	return nil
}
