package redisstore

import (
	"strconv"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// Slot agrees with the server's CLUSTER KEYSLOT, hash tags included, and
// every rule key of a subject shares its slot.
func TestSlotMatchesRedis(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	node := c.Nodes()[0]
	s := &Store{prefix: "rl:", cluster: true}
	for _, key := range []string{
		"", "a", "123456789", "rl:{orders:user-42}:per-minute", "{}x", "x{}y{z}", "{a}{b}", "ü{é}",
		s.Key("orders:a}b", "r"), s.Key("orders:{x}", "r"),
	} {
		got := Slot(key)
		want, err := strconv.Atoi(node.MustDo("CLUSTER", "KEYSLOT", key))
		if err != nil || int(got) != want {
			t.Errorf("Slot(%q) = %d, CLUSTER KEYSLOT says %d (%v)", key, got, want, err)
		}
	}
	if Slot("123456789") != 12739 { // the CRC-16/XMODEM check value 0x31C3 mod 16384
		t.Errorf("Slot(123456789) = %d", Slot("123456789"))
	}
	// Shard's shortcut agrees with the slot of the keys themselves, also for
	// subjects with braces, and with a prefix that has a brace of its own.
	braced := &Store{prefix: "app{1}:", cluster: true}
	for _, sk := range []string{"orders:u", "orders:a}b", "x:{y}", "}lead", "{"} {
		if got, want := braced.Shard(sk), int(Slot(braced.Key(sk, "r")))/256; got != want {
			t.Errorf("prefix with a brace: Shard(%q) = %d, the key's slot says %d", sk, got, want)
		}
	}
	for _, sk := range []string{"orders:u", "orders:a}b", "x:{y}", "orders:{"} { // store keys start with a namespace
		if Slot(s.Key(sk, "r1")) != Slot(s.Key(sk, "r2")) || s.Shard(sk) != int(Slot(s.Key(sk, "")))/256 {
			t.Errorf("rules of %q do not share a shard", sk)
		}
	}
	if (&Store{prefix: "rl:"}).Shard("orders:u") != 0 {
		t.Error("a standalone store has one shard")
	}
	// ShardFunc agrees with a Store's Shard before any Store exists.
	byOpts := ShardFunc(Options{Mode: Cluster})
	for _, sk := range []string{"orders:u", "orders:a}b", "x:{y}", "payments:42"} {
		if got, want := byOpts(sk), s.Shard(sk); got != want {
			t.Errorf("ShardFunc(%q) = %d, Store.Shard = %d", sk, got, want)
		}
	}
	if ShardFunc(Options{Mode: Sentinel})("orders:u") != 0 {
		t.Error("ShardFunc: a Sentinel deployment has one shard")
	}
}
