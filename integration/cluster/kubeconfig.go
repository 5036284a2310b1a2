package cluster

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
)

// writeKubeconfig writes a kubeconfig for one user of the cluster, with the
// CA and the client certificate embedded.
func writeKubeconfig(path, server string, caPEM []byte, user keyPair) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hotgpu-it
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: hotgpu-it
  context: {cluster: hotgpu-it, user: user}
current-context: hotgpu-it
`, server, b64(caPEM), b64(user.CertPEM), b64(user.KeyPEM))
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// UserKubeconfig writes a kubeconfig for a non-admin user (a client
// certificate with CN=user, O=groups) and returns its path; what the user
// may do is up to the RBAC rules a test creates.
func (c *Cluster) UserKubeconfig(user string, groups ...string) (string, error) {
	pair, err := c.ca.client(user, groups...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "kubeconfig-"+user)
	if err := writeKubeconfig(path, c.Server, c.ca.pem, pair); err != nil {
		return "", fmt.Errorf("failed to write kubeconfig for %s: %w", user, err)
	}
	return path, nil
}
