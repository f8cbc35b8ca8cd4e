package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
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
			return nil, usageErrorf("%s (see tallship %s --help)", fs.flagError(err), fs.Name())
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

// The flag package's errors, which name flags "-name" and say "parse
// error" for any value it cannot read.
var (
	flagUnknown  = regexp.MustCompile(`^flag provided but not defined: -(.*)$`)
	flagNoValue  = regexp.MustCompile(`^flag needs an argument: -(.*)$`)
	flagBadValue = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]*): (.*)$`)
)

// flagError rewrites an error of the flag package as the help shows
// flags, "--name", saying what a flag of that type wants where the flag
// package only says "parse error".
func (fs *flagSet) flagError(err error) string {
	msg := err.Error()
	if m := flagUnknown.FindStringSubmatch(msg); m != nil {
		return "unknown flag --" + m[1]
	}
	if m := flagNoValue.FindStringSubmatch(msg); m != nil {
		return "flag needs an argument: --" + m[1]
	}
	m := flagBadValue.FindStringSubmatch(msg)
	if m == nil {
		return msg // "bad flag syntax: ---x" quotes the argument as given
	}
	value, name, why := m[1], m[2], m[3]
	if f := fs.Lookup(name); f != nil {
		if g, ok := f.Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case bool:
				why = "want true or false"
			case time.Duration:
				why = "want a duration such as 500ms, 2s or 1m30s"
			case int:
				if why == "parse error" {
					why = "want a whole number"
				}
			}
		}
	}
	return fmt.Sprintf("invalid value %s for flag --%s: %s", value, name, why)
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
	usage := fs.usage() + " [flags]"
	if before, after, ok := strings.Cut(fs.usage(), " -- "); ok { // flags go before CMD
		usage = before + " [flags] -- " + after
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", usage, strings.TrimSpace(fs.details))
	fmt.Fprintln(w, "\nFlags:")
	for _, f := range visible {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintln(w, line)
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "0s" && def != "[]" &&
			!strings.Contains(usage, "(default "+def+")") { // said already ($TALLSHIP_SECRET)
			usage += fmt.Sprintf(" (default\x00%s)", def) // \x00: kept on one line
		}
		fmt.Fprint(w, wrap(usage, "      ", helpWidth))
	}
}

// helpWidth is the width help text is wrapped to.
const helpWidth = 79

// wrap returns text wrapped to width columns, each line starting with
// indent and ending with a newline. Words longer than a line stay whole;
// a NUL byte is a space where no line breaks.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	for _, para := range strings.Split(text, "\n") {
		n := 0 // the length of the line so far
		for _, word := range strings.Fields(para) {
			w := utf8.RuneCountInString(word)
			switch {
			case n == 0:
				b.WriteString(indent)
				n = len(indent)
			case n+1+w > width:
				b.WriteString("\n" + indent)
				n = len(indent)
			default:
				b.WriteString(" ")
				n++
			}
			b.WriteString(strings.ReplaceAll(word, "\x00", " "))
			n += w
		}
		b.WriteString("\n")
	}
	return b.String()
}

// stringList is a flag that may be given several times.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}
