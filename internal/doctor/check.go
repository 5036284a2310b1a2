package doctor

import "slices"

// Status is a check's verdict.
type Status string

// The verdicts. Skip is a check that could not run because an earlier one
// failed or it does not apply (hotgpud down, a simulated node's /dev).
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// The steps, in the order they run.
const (
	StepDriver     = "driver"
	StepCDI        = "cdi"
	StepRuntime    = "runtime"
	StepHotgpud    = "hotgpud"
	StepAttachTest = "attach-test"
)

// Check is one line of the report.
type Check struct {
	Step   string `json:"step"`
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; empty when there is nothing to do.
	Fix string `json:"fix,omitempty"`
}

// Report is every check of one run.
type Report struct {
	Checks []Check `json:"checks"`
	// Failed is set when any check failed; `hotgpu doctor` exits non-zero.
	Failed bool `json:"failed"`
}

func (r *Report) add(cs ...Check) {
	r.Checks = append(r.Checks, cs...)
	if slices.ContainsFunc(cs, func(c Check) bool { return c.Status == Fail }) {
		r.Failed = true
	}
}

// Count returns how many checks have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// step makes the checks of one step.
type step string

func (s step) ok(name, detail string) Check {
	return Check{Step: string(s), Name: name, Status: OK, Detail: detail}
}

func (s step) warn(name, detail, fix string) Check {
	return Check{Step: string(s), Name: name, Status: Warn, Detail: detail, Fix: fix}
}

func (s step) fail(name, detail, fix string) Check {
	return Check{Step: string(s), Name: name, Status: Fail, Detail: detail, Fix: fix}
}

func (s step) skip(name, detail string) Check {
	return Check{Step: string(s), Name: name, Status: Skip, Detail: detail}
}
