package lan

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// helperPkg is the program every host runs.
const helperPkg = "github.com/tallship-go/tallship/internal/testutil/lanhost"

// buildDirPrefix names the directories the helper is built into; the
// process id follows, so that a later run can remove what a killed one
// left.
const buildDirPrefix = "tallship-lanhost-"

var helper struct {
	once sync.Once
	path string
	err  error
}

// helperBinary builds internal/testutil/lanhost once per test binary and returns
// its path. The modules come from the local cache (GOPROXY=off): no proxy
// is reachable from the test's namespace.
func helperBinary(t testing.TB) string {
	t.Helper()
	helper.once.Do(func() { helper.path, helper.err = buildHelper() })
	if helper.err != nil {
		t.Fatalf("lan: %v", helper.err)
	}
	return helper.path
}

func buildHelper() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	removeStaleBuilds()
	dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	path := filepath.Join(dir, "lanhost")
	cmd := exec.Command(gobin, "build", "-buildvcs=false", "-o", path, helperPkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build %s: %v\n%s", helperPkg, err, out)
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

// removeStaleBuilds removes the helper builds of test binaries that no
// longer run. The build of a running binary is kept until it ends: a test
// binary has no hook to run at exit, so the next one cleans up.
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
