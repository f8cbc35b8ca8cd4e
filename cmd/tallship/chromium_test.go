package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// A headless Chromium (Debian's chromium package), started by the test
// inside its network namespace and driven over the DevTools protocol with
// a small websocket client: evaluate JavaScript in the page, take a
// screenshot. The flags keep it from reaching anything but the page: no
// background networking, component updates, sync or QUIC.

// chromiumFlags are the flags every run gets, before --user-data-dir.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
	"--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage",
}

// findChromium returns the browser to use, or "" and why there is none.
// $TALLSHIP_CHROMIUM names one explicitly.
func findChromium() (path, why string) {
	if p := os.Getenv("TALLSHIP_CHROMIUM"); p != "" {
		return p, ""
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, ""
		}
	}
	return "", "no chromium on $PATH (Debian: apt-get install chromium; .ci/run installs it) and $TALLSHIP_CHROMIUM unset"
}

// browser is a running headless Chromium with one page open.
type browser struct {
	t   *testing.T
	cmd *exec.Cmd
	ws  *websocket.Conn
	seq int

	mu     sync.Mutex
	stderr bytes.Buffer
}

func (b *browser) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.Write(p)
}

// startBrowser opens url in a new headless Chromium, in its own process
// group, killed with it when the test ends.
func startBrowser(t *testing.T, path, url string, width, height int) *browser {
	t.Helper()
	profile := t.TempDir()
	args := slices.Concat(chromiumFlags, []string{
		"--user-data-dir=" + profile,
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
		fmt.Sprintf("--window-size=%d,%d", width, height),
		url})
	b := &browser{t: t}
	b.cmd = exec.Command(path, args...)
	b.cmd.Stdout, b.cmd.Stderr = b, b
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.cmd.WaitDelay = 2 * time.Second
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if b.ws != nil {
			b.ws.Close()
		}
		// Its renderer and helper processes are in its process group.
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("chromium did not exit after SIGKILL")
		}
		if t.Failed() {
			b.mu.Lock()
			t.Logf("chromium stderr:\n%s", b.stderr.String())
			b.mu.Unlock()
		}
	})

	// Chromium writes the port it chose into the profile.
	var port string
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if first, _, ok := strings.Cut(string(data), "\n"); err == nil && ok {
			port = first
			break
		}
		select {
		case <-exited:
			t.Fatalf("chromium exited before its DevTools came up:\n%s", b.stderrText())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromium's DevTools did not come up within 20 s:\n%s", b.stderrText())
		}
	}
	var targets []struct{ Type, URL, WebSocketDebuggerURL string }
	for {
		targets = targets[:0]
		err := getJSON("http://127.0.0.1:"+port+"/json/list", &targets)
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				ws, err := websocket.Dial(tg.WebSocketDebuggerURL, "", "http://127.0.0.1/")
				if err != nil {
					t.Fatalf("DevTools websocket %s: %v", tg.WebSocketDebuggerURL, err)
				}
				ws.MaxPayloadBytes = 64 << 20
				b.ws = ws
				// The page's size, whatever the window's decorations take.
				if _, err := b.call("Emulation.setDeviceMetricsOverride", map[string]any{
					"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false,
				}); err != nil {
					t.Fatalf("set the page size: %v", err)
				}
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page among chromium's targets within 20 s (%v): %+v", err, targets)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) stderrText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.String()
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, r.Status)
	}
	return json.NewDecoder(r.Body).Decode(v)
}

// call sends one DevTools command and returns its result. Events the page
// sends meanwhile are ignored (no domain is enabled, so there are few).
func (b *browser) call(method string, params any) (json.RawMessage, error) {
	b.seq++
	id := b.seq
	b.ws.SetDeadline(time.Now().Add(15 * time.Second))
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(b.ws, &msg); err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if msg.ID != id {
			continue
		}
		if msg.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result, nil
	}
}

// eval evaluates a JavaScript expression in the page and decodes its
// value, which must be JSON-serializable, into v.
func (b *browser) eval(expr string, v any) error {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var out struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return err
	}
	if e := out.Exception; e != nil {
		return errors.New(e.Text + " " + e.Exception.Description)
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(out.Result.Value, v)
}

// screenshot saves the page, as the browser shows it, as a PNG file.
func (b *browser) screenshot(path string) error {
	res, err := b.call("Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		return err
	}
	var out struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(out.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
