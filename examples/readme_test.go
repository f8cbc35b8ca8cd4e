package examples

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tallship-go/tallship/internal/testutil/netns"
)

// The Go code of README.md must compile as written, and its first
// program must do what the README says it does. TestReadmeGo extracts
// every ```go block and builds it:
//
//   - a block that starts with a package clause is a program, built as
//     it is;
//   - any other block is a fragment: it becomes the body of a function
//     given ctx (context.Context), node (*mesh.Node) and handler
//     (http.Handler), in a file that imports those three packages and no
//     others, and the variables it declares at its top level count as
//     used (a fragment shows calls, not what is done with their
//     results).
//
// Then it runs the first program twice, inside the test's private network
// namespace, and checks that each copy prints the greeting of the other
// and exits 0.

// goBlock is one ```go block of a Markdown file.
type goBlock struct {
	line int // of its first code line
	code string
}

// markdownGo returns the ```go blocks of a Markdown text.
func markdownGo(text string) []goBlock {
	var blocks []goBlock
	var cur *goBlock
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &goBlock{line: n + 1}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code += line + "\n"
		}
	}
	return blocks
}

// packageClause matches a program's package clause, after any comments.
var packageClause = regexp.MustCompile(`(?m)^package \w+$`)

// isProgram reports whether a block is a whole file, not a fragment.
func (b goBlock) isProgram() bool {
	first := strings.TrimSpace(b.code)
	return strings.HasPrefix(first, "package ") || (strings.HasPrefix(first, "//") && packageClause.MatchString(b.code))
}

// source returns the file a block is built as.
func (b goBlock) source() (string, error) {
	if b.isProgram() {
		return b.code, nil
	}
	const head = "package main\n\nimport (\n\t\"context\"\n\t\"net/http\"\n\n\t\"github.com/tallship-go/tallship/mesh\"\n)\n\nfunc main() {}\n\n" +
		"func fragment(ctx context.Context, node *mesh.Node, handler http.Handler) {\n"
	src := head + b.code
	f, err := parser.ParseFile(token.NewFileSet(), "", src+"}\n", 0)
	if err != nil {
		return "", err
	}
	var used []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "fragment" {
			continue
		}
		for _, st := range fn.Body.List {
			as, ok := st.(*ast.AssignStmt)
			if !ok || as.Tok != token.DEFINE {
				continue
			}
			for _, e := range as.Lhs {
				if id, ok := e.(*ast.Ident); ok && id.Name != "_" && !slices.Contains(used, id.Name) {
					used = append(used, id.Name)
				}
			}
		}
	}
	for _, name := range used {
		src += "\t_ = " + name + "\n"
	}
	return src + "}\n", nil
}

func TestReadmeGo(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := markdownGo(string(text))
	first := slices.IndexFunc(blocks, goBlock.isProgram)
	if first < 0 {
		t.Fatalf("README.md has no Go program (a ```go block with a package clause); blocks: %d", len(blocks))
	}

	dir := t.TempDir()
	var program string // the first program, built
	for i, b := range blocks {
		name := fmt.Sprintf("readme-block-%d", i+1)
		t.Run(fmt.Sprintf("README.md:%d", b.line), func(t *testing.T) {
			src, err := b.source()
			if err != nil {
				t.Fatalf("README.md:%d: the block does not parse: %v\n%s", b.line, err, b.code)
			}
			buildReadmeBlock(t, root, dir, name, src)
		})
		if i == first {
			program = filepath.Join(dir, name)
		}
	}
	if t.Failed() {
		return
	}

	t.Run("program twice", func(t *testing.T) {
		netns.Require(t)
		// Two copies started together; each must hear the other.
		a := start(t, dir, filepath.Base(program))
		b := start(t, dir, filepath.Base(program))
		says := regexp.MustCompile(`(?m)^(\S+) says hello, mesh$`)
		var heard []string
		for _, p := range []*proc{a, b} {
			if code := p.wait(t, 60*time.Second); code != 0 {
				t.Fatalf("the README's program: exit status %d", code)
			}
			m := says.FindStringSubmatch(p.output())
			if m == nil {
				t.Fatalf("the README's program printed no \"ID says hello, mesh\" line:\n%s", p.output())
			}
			heard = append(heard, m[1])
		}
		// Each heard from a node other than itself: with only these two
		// in the cluster, from the other copy.
		if heard[0] == heard[1] {
			t.Fatalf("both copies heard %s: one of them heard itself", heard[0])
		}
	})
}

// buildReadmeBlock builds src as the main package name, into dir. The
// file is given to the go command as an overlay at a path inside the
// module (examples/name/main.go, which does not exist), so that it builds
// against this tree, and nothing is written into it.
func buildReadmeBlock(t *testing.T, root, dir, name, src string) {
	t.Helper()
	file := filepath.Join(dir, name+".go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay, err := json.Marshal(map[string]map[string]string{
		"Replace": {filepath.Join(root, "examples", name, "main.go"): file},
	})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(dir, name+".json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-overlay", overlayFile, "-o", filepath.Join(dir, name)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./examples/"+name)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the block does not build: %v\n%s\nbuilt as:\n%s", err, out, numbered(src))
	}
}

// numbered returns src with line numbers, for a compiler's messages.
func numbered(src string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(src, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d  %s\n", i+1, l)
	}
	return b.String()
}
