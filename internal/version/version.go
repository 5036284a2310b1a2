// Package version holds hotgpu's version, set at build time:
//
//	go build -ldflags "-X github.com/hotgpu/hotgpu/internal/version.Version=v1.2.3"
package version

// Version is "dev" in builds that do not set it.
var Version = "dev"
