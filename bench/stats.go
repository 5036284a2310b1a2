package bench

import (
	"fmt"
	"slices"
	"time"
)

// Sample is a set of measurements of one thing, in taking order.
type Sample []time.Duration

// Median is the middle value (the mean of the two middle ones when even).
func (s Sample) Median() time.Duration { return s.Percentile(50) }

// Percentile returns the p-th percentile by nearest rank (p in 0..100).
func (s Sample) Percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	if p == 50 && len(sorted)%2 == 0 {
		n := len(sorted) / 2
		return (sorted[n-1] + sorted[n]) / 2
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// Ratio is a/b as a float, 0 when b is 0.
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// MedianRatio is the median of the per-round ratios a[i]/b[i]: rounds that
// ran at the same time are compared with each other, cancelling slow drift.
func MedianRatio(a, b Sample) float64 {
	n := min(len(a), len(b))
	if n == 0 {
		return 0
	}
	r := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		r = append(r, Ratio(a[i], b[i]))
	}
	slices.Sort(r)
	if n%2 == 0 {
		return (r[n/2-1] + r[n/2]) / 2
	}
	return r[n/2]
}

// FormatDuration prints d with three significant digits in a sensible unit.
func FormatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3g s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3g ms", float64(d)/float64(time.Millisecond))
	case d >= time.Microsecond:
		return fmt.Sprintf("%.3g µs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	}
}

// FormatRatio prints a ratio as "1.23×".
func FormatRatio(r float64) string {
	if r == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3g×", r)
}

// MiB formats a byte count in MiB.
func MiB(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }
