package redisstore

import "strings"

// ShardGroups is the number of failure domains Shard maps keys to on a
// Cluster: groups of 256 consecutive hash slots. Cluster nodes own ranges of
// consecutive slots, so a group lies on one node (or, at a range's edge,
// two): a service keeping one circuit breaker per group (service.Guard)
// diverts only the checks of a dead node's slots.
const ShardGroups = 64

// Shard returns the failure domain of a store key: its hash slot's group
// (0 to ShardGroups-1) on a Cluster, and 0 on a standalone or Sentinel
// deployment, where every key is on one primary.
func (s *Store) Shard(storeKey string) int {
	if !s.cluster {
		return 0
	}
	return int(s.slot(storeKey) / (16384 / ShardGroups))
}

// slot is Slot(s.Key(storeKey, "")), the slot of every rule key of
// storeKey, without building the key (Shard runs on every check): with a
// prefix that has no '{', the hash tag is storeKey up to its first '}'.
func (s *Store) slot(storeKey string) uint16 {
	if !strings.Contains(s.prefix, "{") {
		tag, _, _ := strings.Cut(storeKey, "}")
		if tag != "" {
			return crc16(tag) % 16384
		}
	}
	return Slot(s.Key(storeKey, ""))
}

// ShardFunc returns what Store.Shard would, from the options alone: the
// failure domains of keys are known before a Store exists (a server that
// starts while Redis is unreachable keeps its breakers by them from the
// start).
func ShardFunc(opts Options) func(storeKey string) int {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "rl:"
	}
	return (&Store{prefix: prefix, cluster: opts.Mode == Cluster}).Shard
}

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag, the part between the first '{' and the next '}' when that part
// is not empty, or of the whole key, modulo 16384.
func Slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

// crc16 is CRC-16/XMODEM: polynomial 0x1021, initial value 0, no
// reflection, the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
