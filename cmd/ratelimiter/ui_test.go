package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// uiConfig: orders denies after 5 a second, so a flood shows denials and a
// most-limited subject.
const uiConfig = `namespaces:
  - name: orders
    limits:
      - name: per-second
        algorithm: token_bucket
        limit: 5
        period: 1s
  - name: search
    limits:
      - name: per-second
        algorithm: token_bucket
        limit: 1000
        period: 1s
`

// The live page in headless Chromium (Debian's chromium, driven by
// chromedp): it loads with no console error or exception, shows the
// namespaces, and its numbers move once traffic flows (checks per second,
// deny ratio, p99, the most limited subject, the audit's replayed checks
// with no disagreement). The test saves a screenshot
// (to $UI_SCREENSHOT when set: that is how docs/ui.png is made).
func TestLivePageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server and Chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not on PATH: run scripts/install-tools.sh (Debian package chromium)")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, uiConfig)
	s := startServer(t, bin, "--config", cfg, "--audit-rate", "1")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 720),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	var mu sync.Mutex
	var problems []string
	err = chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			problems = append(problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, d.Text))
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	url := "http://" + s.addr + "/ui/"
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(`tr[data-ns="orders"]`)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}

	// Traffic from here on: a flood of one subject on orders (mostly
	// denied) and steady checks on search, while the page polls.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ns, subject := "orders", "flooder"
			if i%2 == 1 {
				ns, subject = "search", "u"+strconv.Itoa(i%50)
			}
			resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json",
				strings.NewReader(`{"namespace":"`+ns+`","subject":"`+subject+`"}`))
			if err == nil {
				resp.Body.Close()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	// The page's numbers move: wait (in the page, up to 30s) until the
	// rate, the deny ratio, the p99, the audit and the top subject show
	// the traffic, and its sparkline has five points.
	const shows = `(() => {
		const row = document.querySelector('tr[data-ns="orders"]');
		if (!row) return false;
		const rate = parseFloat(row.querySelector('td.rate').textContent);
		const deny = row.querySelector('td.deny').textContent;
		const p99 = row.querySelector('td.p99').textContent;
		return rate > 0 && deny.endsWith('%') && deny !== '0.0%' && p99 !== '–' && row.dataset.points >= 5 &&
			/^0 \/ 0 of [1-9]/.test(row.querySelector('td.audit').textContent) &&
			document.getElementById('top').textContent.includes('flooder');
	})()`
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](shows, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		shown, _ := chromedp.Run(ctx, chromedp.Text(`#namespaces`))
		t.Fatalf("the page did not show the traffic within 30s (%v): %s", err, shown)
	}
	shown, err := chromedp.Run(ctx, chromedp.Text(`tr[data-ns="orders"]`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("orders on the page: %s", strings.Join(strings.Fields(shown), " "))

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) && !bytes.HasPrefix(png, []byte("\xff\xd8")) {
		t.Fatalf("the screenshot is no image (%d bytes)", len(png))
	}
	out := filepath.Join(t.TempDir(), "ui.png")
	if p := os.Getenv("UI_SCREENSHOT"); p != "" {
		out = p
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the page logged %d problems: %s", len(problems), strings.Join(problems, "; "))
	}
}

// With an admin token, the page is served to anyone but its data only to
// the token's bearer.
func TestLivePageDataNeedsTheAdminToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, uiConfig)
	s := startServer(t, bin, "--config", cfg, "--admin-token-file", writeToken(t))
	for _, tc := range []struct {
		path, token string
		status      int
	}{
		{"/ui/", "", http.StatusOK},
		{"/ui/data", "", http.StatusUnauthorized},
		{"/ui/data", "wrong-token-of-enough-length", http.StatusUnauthorized},
		{"/ui/data", testToken, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s (token %q): %d, want %d", tc.path, tc.token, resp.StatusCode, tc.status)
		}
	}
}
