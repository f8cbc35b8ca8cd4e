package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

const versionHelp = `
Print the version of tallship this binary was built from and the version
of Go that built it, on one line: "tallship v1.2.3 (go1.25.4 linux/amd64)".
A binary from "go install github.com/tallship-go/tallship/cmd/tallship@v1.2.3"
names that version. One built in a checkout names a pseudo-version of its
commit, or says "(devel)" followed by the commit and "modified" (uncommitted
changes) where the build recorded them. "tallship --version" is the same.
`

func runVersion(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("version", e, versionHelp)
	pos, err := fs.parse(args, -1)
	if err != nil {
		return err
	}
	if err := fs.exactly(pos); err != nil {
		return err
	}
	info, _ := debug.ReadBuildInfo()
	_, err = fmt.Fprintln(e.stdout, versionLine(info, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH))
	return err
}

// versionLine describes the build info (nil when the binary has none) and
// the Go version goVersion, as "tallship VERSION [revision REV
// [modified]] (GOVERSION)".
func versionLine(info *debug.BuildInfo, goVersion string) string {
	version := "(unknown)"
	var extra []string
	if info != nil && info.Main.Version != "" {
		version = info.Main.Version
	}
	if version == "(devel)" {
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			extra = append(extra, "revision "+rev)
		}
		if settings["vcs.modified"] == "true" {
			extra = append(extra, "modified")
		}
	}
	return strings.Join(append(append([]string{"tallship", version}, extra...), "("+goVersion+")"), " ")
}
