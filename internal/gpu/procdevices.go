package gpu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ReadCharMajors reads the kernel's character-device majors by driver name
// from path (/proc/devices). hotgpud, the hook and doctor read the dynamic
// majors (nvidia-uvm, nvidia-caps) this one way.
func ReadCharMajors(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read device majors: %w", err)
	}
	defer f.Close()
	table, err := ParseCharMajors(f)
	if err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return table, nil
}

// ParseCharMajors returns the character-device majors of a /proc/devices
// text by driver name. Block devices are ignored: a block driver can share a
// name with a char driver. The first entry of a name wins.
func ParseCharMajors(r io.Reader) (map[string]int64, error) {
	table := map[string]int64{}
	inChar := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasSuffix(line, ":"):
			inChar = line == "Character devices:"
			continue
		case !inChar:
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		major, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || major <= 0 || major > 0xfff {
			return nil, fmt.Errorf("malformed major in line %q", line)
		}
		if _, seen := table[fields[1]]; !seen {
			table[fields[1]] = major
		}
	}
	return table, sc.Err()
}
