// Command hotgpu is the hotgpu command-line tool: it prints and writes the
// node's CDI spec and, through hotgpud, attaches GPUs to containers.
//
// Each subcommand lives in its own file and registers itself with register;
// main.go only dispatches and turns errors into exit codes (0 ok, 1 failure,
// 2 usage error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// command is one entry of a subcommand table.
type command struct {
	Name    string
	Summary string // one line for the parent's help
	Run     func(ctx context.Context, s stdio, args []string) error
	// Hidden commands are run by hotgpu itself (its helper, doctor's
	// sandbox), not by people: help does not list them.
	Hidden bool
}

// stdio is where a command reads and writes; tests pass buffers.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// commands is the top-level table; files add to it with register in init.
var commands []*command

func register(c *command) { commands = append(commands, c) }

const usage = `hotgpu gives containers NVIDIA GPUs: at creation through CDI and the NRI
plugin, and while they run through hotgpud.

Usage:
  hotgpu <command> [flags]

Commands:
%s
Run 'hotgpu <command> --help' for a command's flags and examples.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, s stdio) int {
	return exitCode(dispatch(ctx, s, "hotgpu", usage, commands, args), s.err)
}

// dispatch picks a subcommand from table by args[0].
func dispatch(ctx context.Context, s stdio, prefix, help string, table []*command, args []string) error {
	if len(args) == 0 {
		fmt.Fprintf(s.err, help, summaries(table))
		return usageErrorf("%s needs a command", prefix)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(s.out, help, summaries(table))
		return nil
	}
	for _, c := range table {
		if c.Name == args[0] {
			return c.Run(ctx, s, args[1:])
		}
	}
	return usageErrorf("unknown command %q for %s (see '%s --help')", args[0], prefix, prefix)
}

func summaries(table []*command) string {
	var b strings.Builder
	for _, c := range table {
		if c.Hidden {
			continue
		}
		fmt.Fprintf(&b, "  %-10s %s\n", c.Name, c.Summary)
	}
	return b.String()
}

// usageError is a mistake on the command line (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errHelp reports that --help was answered; nothing else is to be done.
var errHelp = errors.New("help requested")

// newFlagSet returns a flag set whose --help prints help (with the flags
// appended) to stdout and whose errors become usage errors.
func newFlagSet(name, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, s stdio) error {
	fs.SetOutput(io.Discard) // errors are reported once, by exitCode
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(s.out)
		fs.Usage()
		return errHelp
	case err != nil:
		return usageErrorf("%v (see '%s --help')", err, fs.Name())
	case fs.NArg() > 0:
		return usageErrorf("unexpected argument %q (see '%s --help')", fs.Arg(0), fs.Name())
	}
	return nil
}

func exitCode(err error, stderr io.Writer) int {
	var usage *usageError
	var status exitStatus
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &status):
		return int(status) // the helper printed its own message
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "hotgpu: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "hotgpu: %v\n", err)
		return 1
	}
}
