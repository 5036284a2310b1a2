package harness

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"time"
)

// configTemplate is containerd's config v3. Every path lives under the
// instance's dir so that instances never share state; imports is set so that
// no drop-in on the host leaks in.
var configTemplate = template.Must(template.New("config").Funcs(template.FuncMap{"q": tomlQuote}).Parse(`version = 3
root = {{q .Root}}
state = {{q .State}}
imports = {{q .Imports}}
disabled_plugins = [
  'io.containerd.snapshotter.v1.blockfile',
  'io.containerd.snapshotter.v1.erofs',
  'io.containerd.differ.v1.erofs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
]

[grpc]
  address = {{q .Address}}

[ttrpc]
  address = {{q .TTRPCAddress}}

[debug]
  address = {{q .DebugAddress}}
  level = {{q .LogLevel}}

[plugins]
  # fsync buys nothing for throw-away test state, and a killed containerd
  # loses nothing without it (only a host crash would).
  [plugins.'io.containerd.metadata.v1.bolt']
    no_sync = true

  [plugins.'io.containerd.internal.v1.opt']
    path = {{q .Dir "opt"}}

  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = {{q .Dir "opt/image-verifier/bin"}}

  [plugins.'io.containerd.nri.v1.nri']
    disable = false
    socket_path = {{q .NRISocket}}
    plugin_path = {{q .Dir "nri-plugins"}}
    plugin_config_path = {{q .Dir "nri-conf.d"}}
    plugin_registration_timeout = {{q .NRIRegistrationTimeout}}
    plugin_request_timeout = {{q .NRIRequestTimeout}}

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = {{q .Snapshotter}}
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = {{q .PauseImage}}

  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = true
    cdi_spec_dirs = {{q .CDISpecDirs}}
    # root here lacks CAP_SYS_RESOURCE: containers may not lower oom_score_adj.
    restrict_oom_score_adj = true
    # Pods with their own network (the cluster suite's CNI) get their netns
    # mounted here, not under the host's /var/run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [{{q .Dir "cni/bin"}}]
      conf_dir = {{q .Dir "cni/net.d"}}
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = {{q .Bins.Runc}}
          Root = {{q .RuncRoot}}
          SystemdCgroup = false
{{.ExtraConfig}}
`))

// tomlQuote renders strings and string lists as TOML; JSON strings are valid
// TOML basic strings. A string followed by more strings is joined as a path.
func tomlQuote(v any, more ...string) (string, error) {
	switch v := v.(type) {
	case string:
		v = strings.Join(append([]string{v}, more...), "/")
		b, err := json.Marshal(v)
		return string(b), err
	case time.Duration:
		b, err := json.Marshal(v.String())
		return string(b), err
	case []string:
		if v == nil {
			v = []string{}
		}
		b, err := json.Marshal(v)
		return string(b), err
	}
	b, err := json.Marshal(v)
	return string(b), err
}

type configData struct {
	*Containerd
	Bins                   *Bins
	PauseImage             string
	Imports                []string
	LogLevel               string
	NRIRegistrationTimeout time.Duration
	NRIRequestTimeout      time.Duration
	ExtraConfig            string
}

func writeConfig(path string, d configData) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := configTemplate.Execute(f, d); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
