package gpu

// DriverLibraryDirs are the directories, relative to a driver root, where
// distributions and the GPU operator's driver container install the NVIDIA
// user-space libraries (libnvidia-ml, libcuda, ...). internal/nvml loads NVML
// from them and cdi mounts the libraries it finds there.
var DriverLibraryDirs = []string{
	"usr/lib64",
	"usr/lib/x86_64-linux-gnu",
	"usr/lib/aarch64-linux-gnu",
	"usr/lib",
	"lib64",
	"lib/x86_64-linux-gnu",
	"lib/aarch64-linux-gnu",
	"lib",
}
