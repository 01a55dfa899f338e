package metrics_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAlertRules checks deploy/prometheus/alerts.yaml with promtool and runs
// its unit tests (alerts_test.yaml: every rule fires on the failure it names,
// not before its "for", and stays silent on healthy layouts of one and three
// instances). promtool comes with Debian's prometheus package, which the
// test command installs (scripts/install-tools.sh).
func TestAlertRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs promtool, which the test command installs")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH: run scripts/install-tools.sh (Debian package prometheus)")
	}
	dir := filepath.Join("..", "deploy", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
