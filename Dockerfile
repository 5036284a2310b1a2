# hotgpu image: hotgpud, hotgpu (CLI, with hotgpu-cdi) and hotgpu-hook.
#
#   docker build -t hotgpu:dev --build-arg VERSION=$(git describe --always) .
#
# Stage 1 builds; stage 2 is distroless: no shell, no package manager.
#  - hotgpud and hotgpu-cdi are built with cgo: go-nvml dlopen()s the driver's
#    libnvidia-ml.so.1, so the final image has glibc (distroless/base, not
#    /static). hotgpu-cdi is the CLI's cgo build, which `hotgpu cdi` and `hotgpu doctor` run.
#  - hotgpu (the CLI, for its start time) and hotgpu-hook are static
#    (CGO_ENABLED=0): the init container copies the hook onto the host, where
#    runtimes run it whatever the host's libc.
#
# The image's default user is nonroot (65532): `hotgpu --help`, `hotgpu-hook
# --help` and anything else run from it need no privilege. hotgpud itself must
# run as root (the DaemonSet sets runAsUser: 0 and says why): it writes other
# containers' device cgroups and loads BPF device programs, creates device nodes
# inside their /dev (CAP_MKNOD, through /proc/<pid>/root), opens every GPU for
# NVML, and talks to root-only sockets (NRI, kubelet device plugins).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV LDFLAGS="-s -w -X github.com/hotgpu/hotgpu/internal/version.Version=${VERSION}"
RUN CGO_ENABLED=1 go build -trimpath -ldflags "${LDFLAGS}" -o /out/hotgpud ./cmd/hotgpud
RUN CGO_ENABLED=1 go build -trimpath -ldflags "${LDFLAGS}" -o /out/hotgpu-cdi ./cmd/hotgpu
RUN CGO_ENABLED=0 go build -trimpath -ldflags "${LDFLAGS}" -o /out/hotgpu ./cmd/hotgpu
RUN CGO_ENABLED=0 go build -trimpath -ldflags "${LDFLAGS}" -o /out/hotgpu-hook ./cmd/hotgpu-hook
# The kubectl plugin, for users to copy out (a krew manifest can point here).
RUN CGO_ENABLED=0 go build -trimpath -ldflags "${LDFLAGS}" -o /out/kubectl-hotgpu ./cmd/kubectl-hotgpu

FROM gcr.io/distroless/base-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/hotgpu/hotgpu" \
      org.opencontainers.image.description="hotgpu: NVIDIA GPUs for containers at creation and while they run"
COPY --from=build /out/hotgpud /out/hotgpu /out/hotgpu-cdi /out/hotgpu-hook /out/kubectl-hotgpu /usr/local/bin/
COPY etc/hotgpud.yaml /etc/hotgpu/hotgpud.yaml
# glibc's static ldconfig (distroless has none): a live attach rebuilds the
# container's linker cache with it, chrooted into the container's root.
COPY --from=build /sbin/ldconfig /sbin/ldconfig
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hotgpud"]
CMD ["--config", "/etc/hotgpu/hotgpud.yaml"]
