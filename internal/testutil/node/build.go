package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Command is the harness's command: a main that calls Main.
const Command = "github.com/tallship-go/tallship/internal/testutil/node/cmd/tsnode"

// buildDirPrefix names the directories the command is built into; the
// process id follows, so that a later run can remove what a killed one
// left.
const buildDirPrefix = "tallship-tsnode-"

var built struct {
	once sync.Once
	path string
	err  error
}

// Binary builds Command, once per process, and returns its path; the
// build is removed by the next process to build it once this one has
// ended. It runs go build in the module of the working directory, with the
// modules from the local cache (GOPROXY=off): no proxy is reachable from
// the tests' namespace.
func Binary() (string, error) {
	built.once.Do(func() { built.path, built.err = build() })
	return built.path, built.err
}

func build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	gobin, err := exec.LookPath("go") // go test puts its own first on PATH
	if err != nil {
		return "", err
	}
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "tsnode")
	cmd := exec.Command(gobin, "build", "-buildvcs=false", "-o", path, Command)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build %s: %v\n%s", Command, err, out)
	}
	return path, nil
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// removeStaleBuilds removes the builds of processes that no longer run.
// The build of a running one is kept until it ends: a test binary has no
// hook to run at exit, so the next one cleans up.
func removeStaleBuilds() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), buildDirPrefix)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(m)
		}
	}
}
