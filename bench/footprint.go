package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// Footprint is figure 5 (hotgpud's memory and idle CPU) and the socket-level
// half of figure 4: a real hotgpud on a fake NRI runtime, first idle, then
// with n containers recorded (8 of them holding a GPU each).
func Footprint(ctx context.Context, bin, work string, n int, idle time.Duration) (fig4 []Row, fig5 *Section, err error) {
	s := &Section{Title: "hotgpud footprint"}
	rt, err := StartFakeRuntime(filepath.Join(work, "fake-nri"))
	if err != nil {
		return nil, nil, err
	}
	defer rt.Stop()
	accepted := make(chan error, 1)
	go func() { accepted <- rt.Accept(ctx) }()
	d, err := StartDaemon(ctx, bin, filepath.Join(work, "hotgpud-footprint"), rt.Socket, filepath.Join(work, "footprint-cdi"))
	if err != nil {
		return nil, nil, err
	}
	defer d.Stop()
	if err := <-accepted; err != nil {
		return nil, nil, err
	}
	pid := d.PID()
	time.Sleep(time.Second) // let start-up garbage be collected
	idleMem, err := Memory(pid)
	if err != nil {
		return nil, nil, err
	}
	idleCPU, err := IdleCPU(pid, idle)
	if err != nil {
		return nil, nil, err
	}
	took, err := rt.AddContainers(ctx, n, 8)
	if err != nil {
		return nil, nil, fmt.Errorf("%w; hotgpud log:\n%s", err, d.LogTail())
	}
	if err := waitRecorded(ctx, d, n); err != nil {
		return nil, nil, err
	}
	time.Sleep(time.Second)
	fullMem, err := Memory(pid)
	if err != nil {
		return nil, nil, err
	}
	fullCPU, err := IdleCPU(pid, idle/2)
	if err != nil {
		return nil, nil, err
	}
	how := "VmRSS from /proc/<pid>/status of `hotgpud --simulate dgxa100` connected over NRI to a fake runtime (bench/nrifake.go: the runtime end of the NRI protocol, no containers behind it)"
	split := "; anon = RssAnon (the process's own memory), file = RssFile (pages of the mapped binary, shared page cache the kernel can drop; " +
		"with large page-cache folios the kernel maps the text in whole 2 MiB folios on first touch: FilePmdMapped "
	s.Add(Row{Figure: "hotgpud RSS, idle (0 containers)", Hotgpu: memSplit(idleMem), Baseline: "—", Target: "< 40 MiB",
		How: how + ", 1 s after connecting" + split + MiB(idleMem.FilePMD) + " of it)"})
	s.Add(Row{Figure: fmt.Sprintf("hotgpud RSS, %d containers recorded (8 hold a GPU)", n), Hotgpu: memSplit(fullMem) + ", peak " + MiB(fullMem.Peak),
		Baseline: "—", Target: "< 40 MiB", How: fmt.Sprintf("same process after %d NRI CreateContainer + PostStartContainer events, 1 s after the last; peak = VmHWM", n)})
	s.Add(Row{Figure: "hotgpud CPU at idle", Hotgpu: cpuShare(idleCPU, idle) + "; with " + fmt.Sprint(n) + " containers " + cpuShare(fullCPU, idle/2),
		Baseline: "—", Target: "~0 (no polling)", How: fmt.Sprintf("utime+stime from /proc/<pid>/stat over %s idle, and over %s with the containers recorded (10 ms tick resolution)", idle, idle/2)})
	fig4 = append(fig4, Row{Figure: fmt.Sprintf("NRI CreateContainer over the socket, real hotgpud, up to %d containers recorded", n),
		Hotgpu: fmt.Sprintf("p50 %s, p99 %s", FormatDuration(took.Median()), FormatDuration(took.Percentile(99))), Baseline: "—",
		How: fmt.Sprintf("%d CreateContainer round trips from the fake runtime to hotgpud's process (ttrpc over the NRI socket), the first 8 annotated for a GPU (ledger write + fsync), the rest asking for nothing", n)})
	return fig4, s, nil
}

// memSplit says VmRSS and what it is made of.
func memSplit(m Mem) string {
	return fmt.Sprintf("%s (anon %s, file %s)", MiB(m.RSS), MiB(m.Anon), MiB(m.File))
}

func waitRecorded(ctx context.Context, d *Daemon, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	got := -1
	for time.Now().Before(deadline) {
		st, err := d.API.Status(ctx)
		if err == nil {
			if got = st.Containers; got >= n {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%w: %d of %d after 20s; log:\n%s", errNotRecorded, got, n, d.LogTail())
}

func cpuShare(used, over time.Duration) string {
	if over <= 0 {
		return "?"
	}
	return fmt.Sprintf("%s CPU in %s (%.2f%%)", FormatDuration(used), over, 100*used.Seconds()/over.Seconds())
}
