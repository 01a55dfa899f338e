package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// NewPatch is the one judge of a patch as written, for the file and the
// admin API alike: every field absent is an error, a written zero or a
// negative is one (0 would mean "keep"), a period must parse, an algorithm
// must exist; the error names the field by its path.
func TestNewPatch(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	str := func(v string) *string { return &v }
	p, err := NewPatch(PatchFields{Limit: i(1000), Period: str("2m"), Burst: i(200), Algorithm: str("gcra")})
	if err != nil || p != (Patch{Limit: 1000, Period: 2 * time.Minute, Burst: 200, Algorithm: limit.TokenBucket}) {
		t.Fatalf("a full patch: %+v %v", p, err)
	}
	if back, err := NewPatch(p.Fields()); err != nil || back != p {
		t.Fatalf("Fields does not read back: %+v %v", back, err)
	}
	for _, tc := range []struct {
		name string
		f    PatchFields
		path string
		msg  string
	}{
		{"nothing", PatchFields{}, "", "want at least one of limit, period, burst, algorithm"},
		{"zero limit", PatchFields{Limit: i(0)}, "limit", "0 is outside [1, 1000000000]"},
		{"negative burst", PatchFields{Burst: i(-5)}, "burst", "-5 is outside [1, 1000000000]"},
		{"zero period", PatchFields{Period: str("0s")}, "period", "0s is outside [1ms, 744h0m0s]"},
		{"bad period", PatchFields{Period: str("soon")}, "period", `"soon" is not a duration such as 500ms, 30s, 1m or 1h`},
		{"bad algorithm", PatchFields{Algorithm: str("magic")}, "algorithm", `unknown algorithm "magic"`},
	} {
		_, err := NewPatch(tc.f)
		var fe *FieldError
		if !errors.As(err, &fe) || FormatPath(fe.Path) != tc.path || !errors.Is(err, ErrInvalid) || len(fe.Err.Error()) < len(tc.msg) || fe.Err.Error()[:len(tc.msg)] != tc.msg {
			t.Errorf("%s: %v, want %s: %s", tc.name, err, tc.path, tc.msg)
		}
	}
}

// A FieldError prints its path the way the configuration is read, and a
// rule's error is placed at its field.
func TestFieldErrorPath(t *testing.T) {
	err := fieldErr(fieldErr(errors.New("bad"), "limit"), "namespaces", Elem("orders"), "limits", Elem("per-minute"))
	if err.Error() != "namespaces[orders].limits[per-minute].limit: bad" {
		t.Errorf("%q", err.Error())
	}
	_, rerr := limit.Rule{Name: "r", Algorithm: limit.TokenBucket, Limit: -1, Period: time.Second}.Normalize()
	fe := fieldErr(rerr, "limits", Elem("r"))
	if FormatPath(fe.Path) != "limits[r].limit" || !errors.Is(fe, limit.ErrInvalidRule) || fe.Err.Error() != "-1 is outside [1, 1000000000]" {
		t.Errorf("a rule error placed: %v (%v)", fe, fe.Path)
	}
}
