package main

import (
	"encoding/json"
	"flag"
	"io"
	"slices"
	"strings"
)

// apiFlags registers --socket and -o on a command that talks to hotgpud;
// the first format is the default.
func apiFlags(fs *flag.FlagSet, formats ...string) (socket, output *string) {
	socket = fs.String("socket", defaultSocket, "hotgpud API socket")
	output = fs.String("o", formats[0], "output: "+strings.Join(formats, " or "))
	return socket, output
}

// checkFormat refuses an -o value the command does not print.
func checkFormat(output string, formats ...string) error {
	if !slices.Contains(formats, output) {
		return usageErrorf("-o must be %s, got %q", strings.Join(formats, " or "), output)
	}
	return nil
}

// printJSON writes v as indented JSON, for -o json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
