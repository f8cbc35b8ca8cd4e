package examples

import (
	"bufio"
	"fmt"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// The shell lines the README and the examples' doc comments give a reader
// to type must work as written in the shells readers have: sh (dash on
// Debian), bash and zsh. TestDocumentedShellLines extracts every one of
// them and runs it under each shell, inside the test's private network
// namespace (the lines that make a namespace of their own, unshare -rn,
// make it inside that one), and checks that it ends in time and prints
// what the docs say. Every line found must be in docLines below: run, or
// left out with the reason, so that a new line is never silently untested.

// docLine says how the test runs one documented shell line.
type docLine struct {
	// kind: build (a go build line, run first in its document), run (ends
	// by itself), serve (runs until interrupted: the test waits for want,
	// then sends SIGINT, as Ctrl-C would, and expects exit status 0) or
	// skip.
	kind string
	// want: what the line prints (stdout and stderr), in any order. The
	// test closes the line's stdin (a Ctrl-D) once all of it has appeared.
	want []string
	// wantAfter: what a serve line prints once interrupted.
	wantAfter []string
	// why a skipped line is not run.
	why string
	// alone: the line may not run under two shells at once (a fixed port).
	alone bool
}

// docLines holds every documented shell line, keyed by its text without a
// trailing comment. "/tmp/ex/" (where the examples' lines build to) is
// replaced by a directory of the test's own when the line runs.
var docLines = map[string]docLine{
	// examples/chat
	"go build -o /tmp/ex/ ./examples/chat": {kind: "build"},
	"unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo\n  echo hello from a | /tmp/ex/chat --id a & /tmp/ex/chat --id b'": {
		kind: "run", want: []string{"* you are a in chat", "* you are b in chat", "* a joined", "* b joined", "a: hello from a", "* a left"},
	},
	// examples/client and examples/web
	"go build -o /tmp/ex/ ./examples/web ./examples/client": {kind: "build"},
	"unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo\n  /tmp/ex/client & c=$!; /tmp/ex/web & wait $c; kill $!; wait'": {
		kind: "run", want: []string{"web: web@1.0.0 at 127.0.0.1:", "client: web@^1 is web@1.0.0 at 127.0.0.1:", "hello from web@1.0.0 at 127.0.0.1:", "web: stopped"},
	},
	"tallship run demo web@1.0.0 -- ./web": {
		kind: "serve", want: []string{"tallship run: web@1.0.0 registered at ", "web: serving on port "},
		wantAfter: []string{"tallship run: interrupt: web@1.0.0 freed", "web: stopped"},
	},
	// examples/counter
	"go build -o /tmp/ex/ ./examples/counter": {kind: "build"},
	"unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo\n  for id in a b c; do /tmp/ex/counter --id $id & done; wait'": {
		kind: "run", want: []string{"a: done after 3 rounds, counter 9", "b: stopped by a", "c: stopped by a"},
	},
	// examples/httpmesh
	"httpmesh serve": {kind: "skip", why: "the program's usage; the line after it runs serve and get"},
	"httpmesh get":   {kind: "skip", why: "the program's usage; the line after it runs serve and get"},
	"go build -o /tmp/ex/ ./examples/httpmesh": {kind: "build"},
	"unshare -rn sh -c 'ip link set lo up multicast on; ip route add 224.0.0.0/4 dev lo\n  /tmp/ex/httpmesh serve & /tmp/ex/httpmesh get; kill $!; wait'": {
		kind: "run", want: []string{"httpmesh: serving on node ", "hello over the mesh from "},
	},
	// README.md
	"go get github.com/tallship-go/tallship@latest":                  {kind: "skip", why: "fetches the module from the network"},
	"go install github.com/tallship-go/tallship/cmd/tallship@latest": {kind: "skip", why: "fetches the module from the network"},
	"tallship version": {kind: "run", want: []string{"tallship ", " (go1."}},
	"./scripts/test":   {kind: "skip", why: "runs every test, this one among them"},
	"./scripts/demo": {
		kind: "run", want: []string{"$ tallship query demo web --wait --timeout 10s", "hello from web@1.0.0 on port ", joinLine("service-freed", "web@1.0.0"), "tallship run: terminated: web@1.0.0 freed"},
	},
	"tallship ui demo --http 127.0.0.1:8470": {
		kind: "serve", alone: true, want: []string{joinLine("dashboard", "http://127.0.0.1:8470/")},
	},
	"tallship join demo --http 127.0.0.1:8470": {
		kind: "serve", alone: true, want: []string{joinLine("joined", "demo as "), joinLine("dashboard", "http://127.0.0.1:8470/")},
		wantAfter: []string{joinLine("left", "demo")},
	},
	// The session of "The CLI": commands typed one after another at a
	// terminal, in a private network namespace, whose output the README
	// gives as printed (node ids shortened); each is tested by
	// cmd/tallship's TestCLI.
	"tallship run demo web@1.0.0 -- ./web &":             {kind: "skip", why: "a step of an illustrative session; the same command runs above"},
	"tallship query demo 'web@^1'":                       {kind: "skip", why: "a step of an illustrative session"},
	"tallship query demo api@2.x --wait --timeout 30s &": {kind: "skip", why: "a step of an illustrative session; TestCLI's query --wait before run does the same"},
	"tallship run demo api@2.1.0 -- ./web &":             {kind: "skip", why: "a step of an illustrative session; the line that runs web as web@1.0.0 runs above"},
	"tallship ls demo --json":                            {kind: "skip", why: "a step of an illustrative session"},
	"tallship join demo":                                 {kind: "skip", why: "a step of an illustrative session; join runs above with --http"},
}

// joinLine is the text of a line of tallship join after its time.
func joinLine(event, rest string) string { return fmt.Sprintf("%-18s %s", event, rest) }

// shells are the shells every line runs under; a line's "sh -c" runs
// under the same shell, so that the script it quotes does too.
var shells = []string{"sh", "bash", "zsh"}

func TestDocumentedShellLines(t *testing.T) {
	netns.Require(t)
	if out, err := exec.Command("unshare", "-rn", "true").CombinedOutput(); err != nil {
		t.Skipf("the examples' lines make a namespace with unshare -rn, which fails here: %v %s", err, out)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	docs := documentedLines(t, root)
	for _, d := range docs {
		for _, l := range d.lines {
			spec, ok := docLines[l]
			switch {
			case !ok:
				t.Errorf("%s: a shell line this test does not know; add it to docLines:\n%s", d.file, l)
			case spec.kind == "skip" && spec.why == "":
				t.Errorf("%s: the line %q is skipped without a reason", d.file, l)
			case spec.kind == "skip":
				t.Logf("%s: not run: %s (%s)", d.file, l, spec.why)
			}
		}
	}
	for l := range docLines {
		if !slices.ContainsFunc(docs, func(d document) bool { return slices.Contains(d.lines, l) }) {
			t.Errorf("docLines has a line no document has any more; remove it:\n%s", l)
		}
	}
	if t.Failed() {
		return
	}
	tallshipDir := t.TempDir() // tallship, for the lines that run it
	goBuild(t, root, "-o", tallshipDir+string(filepath.Separator), "./cmd/tallship")

	for _, shell := range shells {
		t.Run(shell, func(t *testing.T) {
			if _, err := exec.LookPath(shell); err != nil {
				t.Skipf("%s is not installed (.ci/run installs it)", shell)
			}
			for _, d := range docs {
				t.Run(d.file, func(t *testing.T) {
					if !slices.ContainsFunc(d.lines, func(l string) bool { return docLines[l].alone }) {
						t.Parallel()
					}
					dir := t.TempDir()
					env := append(os.Environ(), "PATH="+tallshipDir+string(filepath.ListSeparator)+os.Getenv("PATH"),
						"GOPROXY=off", "GOTOOLCHAIN=local")
					// The build lines first, from the module's root, then
					// the others, in the directory they built into.
					for _, build := range []bool{true, false} {
						for _, l := range d.lines {
							spec := docLines[l]
							if (spec.kind == "build") != build || spec.kind == "skip" {
								continue
							}
							text := strings.ReplaceAll(l, "/tmp/ex/", dir+"/")
							text = strings.ReplaceAll(text, "unshare -rn sh -c ", "unshare -rn "+shell+" -c ")
							cwd := dir
							if build || strings.HasPrefix(l, "./scripts/") {
								cwd = root
							}
							runLine(t, shell, text, cwd, env, spec)
						}
					}
				})
			}
		})
	}
}

// document is the shell lines of one file, in order.
type document struct {
	file  string
	lines []string
}

// documentedLines returns the shell lines of the README and of the
// examples' doc comments.
func documentedLines(t *testing.T, root string) []document {
	t.Helper()
	var docs []document
	mains, err := filepath.Glob(filepath.Join(root, "examples", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, path := range mains {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil || f.Doc == nil {
			t.Fatalf("%s: no doc comment: %v", path, err)
		}
		var blocks []string
		var p comment.Parser
		for _, b := range p.Parse(f.Doc.Text()).Content {
			if c, ok := b.(*comment.Code); ok {
				blocks = append(blocks, c.Text)
			}
		}
		docs = append(docs, document{file: rel(root, path), lines: shellLines(blocks)})
	}
	readme := filepath.Join(root, "README.md")
	text, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, document{file: "README.md", lines: shellLines(markdownCode(string(text)))})
	return docs
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil {
		return r
	}
	return path
}

// markdownCode returns the shell code of a Markdown text: indented
// blocks, fenced blocks marked sh, bash, shell or console, and in a
// console block only the commands (after "$ ").
func markdownCode(text string) []string {
	var blocks []string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			blocks = append(blocks, strings.Join(cur, "\n"))
		}
		cur = nil
	}
	fence, lang := false, ""
	prevBlank := true
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			if fence {
				flush()
				fence = false
			} else {
				fence, lang = true, strings.TrimPrefix(line, "```")
			}
		case fence:
			switch lang {
			case "sh", "bash", "shell":
				cur = append(cur, line)
			case "console":
				if cmd, ok := strings.CutPrefix(line, "$ "); ok {
					cur = append(cur, cmd)
				}
			}
		case strings.HasPrefix(line, "    ") && (prevBlank || len(cur) > 0):
			cur = append(cur, strings.TrimPrefix(line, "    "))
		default:
			flush()
		}
		prevBlank = strings.TrimSpace(line) == ""
	}
	flush()
	return blocks
}

var (
	// trailingComment is a shell comment at the end of a line.
	trailingComment = regexp.MustCompile(`\s+#\s.*$`)
	// placeholder is a word in capitals (CLUSTER, ROLE@VER, CMD...), which
	// marks a synopsis, not a line to type; an assignment (GOPROXY=off) is
	// no placeholder.
	placeholder = regexp.MustCompile(`(^|\s)[A-Z][A-Z@\[\]._-]{2,}(\s|$)`)
)

// shellLines splits code blocks into shell lines: a line whose single
// quotes are not closed goes on with the next. Trailing comments and
// blank lines are dropped, and so are synopses.
func shellLines(blocks []string) []string {
	var lines []string
	for _, b := range blocks {
		var cur []string
		for _, l := range strings.Split(b, "\n") {
			if len(cur) == 0 {
				l = trailingComment.ReplaceAllString(l, "")
				if strings.TrimSpace(l) == "" {
					continue
				}
			}
			cur = append(cur, l)
			joined := strings.Join(cur, "\n")
			if strings.Count(joined, "'")%2 == 0 {
				if !placeholder.MatchString(joined) {
					lines = append(lines, strings.TrimSpace(joined))
				}
				cur = nil
			}
		}
	}
	return lines
}

// goBuild runs go with args in dir, without the module proxy: the module
// cache must be filled.
func goBuild(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// runLine runs text under shell in cwd as spec says.
func runLine(t *testing.T, shell, text, cwd string, env []string, spec docLine) {
	t.Helper()
	p := &proc{exited: make(chan struct{}), grew: make(chan struct{})}
	p.cmd = exec.Command(shell, "-c", text)
	p.cmd.Dir = cwd
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.WaitDelay = 2 * time.Second
	// Its own process group, so that the test can end whatever it started.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s -c %q: %v", shell, text, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	pgid := p.cmd.Process.Pid
	defer func() {
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
		if t.Failed() {
			t.Logf("%s -c %q printed:\n%s", shell, text, p.output())
		}
	}()
	// A build has 3 minutes (a cold cache, a busy machine); the rest 60 s.
	limit := 60 * time.Second
	if spec.kind == "build" {
		limit = 3 * time.Minute
	}
	deadline := time.Now().Add(limit)
	for _, w := range spec.want {
		if !p.waitUntil(w, deadline) {
			t.Fatalf("%s -c %q: no %q within %v", shell, text, w, limit)
		}
	}
	stdin.Close() // Ctrl-D
	if spec.kind == "serve" {
		interrupt(t, shell, p.cmd.Process.Pid)
		deadline = time.Now().Add(limit)
		for _, w := range spec.wantAfter {
			if !p.waitUntil(w, deadline) {
				t.Fatalf("%s -c %q: no %q within %v of SIGINT", shell, text, w, limit)
			}
		}
	}
	select {
	case <-p.exited:
	case <-time.After(time.Until(deadline)):
		t.Fatalf("%s -c %q: still running after %v", shell, text, limit)
	}
	if p.err != nil {
		t.Fatalf("%s -c %q: %v", shell, text, p.err)
	}
}

// interrupt sends SIGINT to the command the shell of pid runs, as Ctrl-C
// at a terminal would: to pid itself when the shell has exec'd the
// command (bash and zsh do for a single command), else to the shell's
// children, since an interactive shell would ignore the signal, where the
// "shell -c" standing in for it would die of it (dash).
func interrupt(t *testing.T, shell string, pid int) {
	t.Helper()
	shellPath, err := exec.LookPath(shell)
	if err == nil {
		shellPath, err = filepath.EvalSymlinks(shellPath)
	}
	exe, err2 := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || err2 != nil {
		t.Fatalf("which program is process %d: %v %v", pid, err, err2)
	}
	if exe != shellPath {
		syscall.Kill(pid, syscall.SIGINT)
		return
	}
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil || len(strings.Fields(string(children))) == 0 {
		t.Fatalf("the children of %s (process %d): %q %v", shell, pid, children, err)
	}
	for _, c := range strings.Fields(string(children)) {
		var child int
		fmt.Sscan(c, &child)
		syscall.Kill(child, syscall.SIGINT)
	}
}

// waitUntil waits until text is in the output, and reports whether it came
// before deadline.
func (p *proc) waitUntil(text string, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		p.mu.Lock()
		found, grew := strings.Contains(p.out.String(), text), p.grew
		p.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-grew:
		case <-p.exited:
			return strings.Contains(p.output(), text)
		case <-timer.C:
			return false
		}
	}
}
