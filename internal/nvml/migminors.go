package nvml

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// migMinors resolves the /dev/nvidia-caps minor that grants access to a GPU
// instance (ci < 0) or to a compute instance inside it.
type migMinors interface {
	minor(gpuMinor, gi, ci int) (int64, bool)
}

// capKey is the key the driver uses in /proc/driver/nvidia-caps/mig-minors,
// e.g. "gpu0/gi1/access" or "gpu0/gi1/ci0/access".
func capKey(gpuMinor, gi, ci int) string {
	if ci < 0 {
		return fmt.Sprintf("gpu%d/gi%d/access", gpuMinor, gi)
	}
	return fmt.Sprintf("gpu%d/gi%d/ci%d/access", gpuMinor, gi, ci)
}

// tableMinors is the driver's mig-minors file, parsed.
type tableMinors map[string]int64

func (t tableMinors) minor(gpuMinor, gi, ci int) (int64, bool) {
	m, ok := t[capKey(gpuMinor, gi, ci)]
	return m, ok
}

func readMIGMinors(path string) (tableMinors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMIGMinors(f)
}

// parseMIGMinors reads lines "<capability> <minor>".
func parseMIGMinors(r io.Reader) (tableMinors, error) {
	t := tableMinors{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("malformed mig-minors line %q", sc.Text())
		}
		m, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed minor in mig-minors line %q", sc.Text())
		}
		t[fields[0]] = m
	}
	return t, sc.Err()
}

// driverLayoutMinors computes minors with the layout the NVIDIA driver uses
// to fill mig-minors: "config" is 1, "monitor" 2, then for every GPU minor 15
// GPU instances, each followed by its 8 compute instances. Simulation uses it
// so simulated caps nodes match what a real host would show.
type driverLayoutMinors struct{}

const (
	layoutFirst   = 3
	layoutCIsPer  = 8
	layoutGIsPer  = 15
	layoutPerGI   = 1 + layoutCIsPer
	layoutPerGPU  = layoutGIsPer * layoutPerGI
	layoutMaxGPUs = 32
)

func (driverLayoutMinors) minor(gpuMinor, gi, ci int) (int64, bool) {
	if gpuMinor < 0 || gpuMinor >= layoutMaxGPUs || gi < 0 || gi >= layoutGIsPer || ci >= layoutCIsPer {
		return 0, false
	}
	m := layoutFirst + gpuMinor*layoutPerGPU + gi*layoutPerGI
	if ci >= 0 {
		m += 1 + ci
	}
	return int64(m), true
}
