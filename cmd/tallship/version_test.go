package main

import (
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestVersionLine(t *testing.T) {
	const gover = "go1.25.4 linux/amd64"
	vcs := []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "b1da3009714a3ec6c96bb3ab65e8b807e9cda23a"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"go install @version", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: vcs},
			"tallship v1.2.3 (go1.25.4 linux/amd64)"},
		{"pseudo-version", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261207032914-b1da3009714a+dirty"}},
			"tallship v0.0.0-20261207032914-b1da3009714a+dirty (go1.25.4 linux/amd64)"},
		{"devel with vcs", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs},
			"tallship (devel) revision b1da3009714a3ec6c96bb3ab65e8b807e9cda23a modified (go1.25.4 linux/amd64)"},
		{"devel clean", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"tallship (devel) revision abc (go1.25.4 linux/amd64)"},
		{"devel without vcs", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			"tallship (devel) (go1.25.4 linux/amd64)"},
		{"no build info", nil, "tallship (unknown) (go1.25.4 linux/amd64)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine(tc.info, gover); got != tc.want {
				t.Errorf("versionLine = %q, want %q", got, tc.want)
			}
		})
	}
}

// testVersion: "tallship version" and "tallship --version" print one line
// with the module version and the Go version that go version -m reads
// from the binary, and the command is in the help.
func testVersion(t *testing.T, bin binaries) {
	out, err := exec.Command("go", "version", "-m", bin.tallship).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	var goVersion, modVersion, revision string
	modified := false
	for i, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case i == 0 && len(f) == 2:
			goVersion = f[1]
		case len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/tallship-go/tallship":
			modVersion = f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			revision = strings.TrimPrefix(f[1], "vcs.revision=")
		case len(f) == 2 && f[0] == "build" && f[1] == "vcs.modified=true":
			modified = true
		}
	}
	if goVersion == "" || modVersion == "" {
		t.Fatalf("go version -m printed no Go or module version:\n%s", out)
	}
	want := "tallship " + modVersion
	if modVersion == "(devel)" && revision != "" {
		want += " revision " + revision
		if modified {
			want += " modified"
		}
	}
	want += " (" + goVersion + " "
	for _, args := range [][]string{{"version"}, {"--version"}} {
		p := tallship(t, bin, "tallship", nil, args...)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Errorf("%q: exit status %d: %s", args, code, p.stderrText())
		}
		lines := p.snapshot()
		if len(lines) != 1 || !strings.HasPrefix(lines[0].text, want) || !strings.HasSuffix(lines[0].text, ")") {
			t.Errorf("%q printed %v, want one line %q…)", args, lines, want)
		}
	}
	p := tallship(t, bin, "tallship", nil, "version", "now")
	if code := p.wait(10 * time.Second); code != 2 || !strings.Contains(p.stderrText(), `unexpected argument "now"`) {
		t.Errorf("version now: exit status %d, stderr %q; want 2 and the unexpected argument", code, p.stderrText())
	}
}
