package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// errHelp is returned by a command that printed its help on request.
var errHelp = errors.New("help requested")

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// hidden names flags left out of --help: they exist for tests.
var hidden = map[string]bool{"fast": true}

// flagSet is a command's flags with the text of its --help.
type flagSet struct {
	*flag.FlagSet
	cmd     *command
	details string
	out     io.Writer
}

func newFlagSet(name string, e *env, details string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by env.fail
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, cmd: lookupCommand(name), details: details, out: e.stdout}
}

// parse parses args, flags and positional arguments in any order, and
// returns the positional ones. After max positional arguments, flags are
// parsed up to the first argument that is not one (or "--"), and the rest
// is returned verbatim after them. With max < 0 there is no such limit;
// "--" always ends the flags.
func (fs *flagSet) parse(args []string, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printHelp()
				return nil, errHelp
			}
			msg := err.Error() // the flag package names flags "-name"
			if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
				msg = "unknown flag --" + name
			} else {
				msg = strings.NewReplacer("flag -", "flag --", "argument: -", "argument: --").Replace(msg)
			}
			return nil, usageErrorf("%s (see tallship %s --help)", msg, fs.Name())
		}
		rest := fs.Args()
		used := len(args) - len(rest)
		if len(rest) == 0 || (used > 0 && args[used-1] == "--") || (max >= 0 && len(pos) >= max) {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// exactly checks that the command got exactly the named positional
// arguments.
func (fs *flagSet) exactly(pos []string, names ...string) error {
	if len(pos) < len(names) {
		return usageErrorf("missing %s (usage: %s)", names[len(pos)], fs.usage())
	}
	if len(pos) > len(names) {
		return usageErrorf("unexpected argument %q (usage: %s)", pos[len(names)], fs.usage())
	}
	return nil
}

// usage is the command's usage line: "tallship NAME ARGS".
func (fs *flagSet) usage() string {
	return strings.TrimSpace("tallship " + fs.Name() + " " + fs.cmd.args)
}

func (fs *flagSet) printHelp() {
	w := fs.out
	var visible []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !hidden[f.Name] {
			visible = append(visible, f)
		}
	})
	if len(visible) == 0 {
		fmt.Fprintf(w, "Usage: %s\n\n%s\n", fs.usage(), strings.TrimSpace(fs.details))
		return
	}
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n", fs.usage(), strings.TrimSpace(fs.details))
	fmt.Fprintln(w, "\nFlags:")
	for _, f := range visible {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintln(w, line)
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "0s" && def != "[]" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(usage, "\n", "\n      "))
	}
}

// stringList is a flag that may be given several times.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}
