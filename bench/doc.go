// Package bench measures hotgpu side by side with the alternatives users have
// — no GPU injection at all, containerd's own CDI injection, NVIDIA's
// nvidia-container-runtime and nvidia-ctk — in one run on one machine, and
// renders the figures as bench/RESULTS.md. cmd/hotgpu-bench drives it
// (`make bench`).
//
// Every comparison is taken in the same run with the variants interleaved
// round by round, so that the drift of a shared, noisy machine hits each of
// them alike; every figure is a median of several runs. Nothing here asserts
// a time: targets are printed next to the figures, never enforced.
//
// It is not a test: it needs root, the integration dependencies
// (integration/deps.sh) and the baselines (bench/deps.sh).
package bench
