package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// Client is a small REST client of the API server, authenticated as one
// user by client certificate. Objects are k8s.io/api types, as JSON.
type Client struct {
	server string
	http   *http.Client
}

// ErrNotFound is returned for a 404.
var ErrNotFound = errors.New("not found")

func newClient(server string, caPEM []byte, user keyPair) (*Client, error) {
	cert, err := tls.X509KeyPair(user.CertPEM, user.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("failed to load client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &Client{server: server, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		}},
	}}, nil
}

// Client returns the admin's client.
func (c *Cluster) Client() *Client { return c.client }

// Raw sends a request with an optional JSON body and returns the response
// body; a status other than 2xx is an error that carries the body.
func (cl *Client) Raw(ctx context.Context, method, path string, body any) ([]byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, cl.server+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s %s: %w", method, path, ErrNotFound)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

// Get decodes the object at path into out.
func (cl *Client) Get(ctx context.Context, path string, out any) error {
	b, err := cl.Raw(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// Create POSTs obj to the collection at path.
func (cl *Client) Create(ctx context.Context, path string, obj any) error {
	_, err := cl.Raw(ctx, "POST", path, obj)
	return err
}

// Delete deletes the object at path; a missing object is not an error.
func (cl *Client) Delete(ctx context.Context, path string) error {
	_, err := cl.Raw(ctx, "DELETE", path, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Kubectl runs the cluster's kubectl as the admin (or with the kubeconfig
// given as --kubeconfig in args, which wins) and returns its output;
// kubectl's discovery cache stays in the cluster dir.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.opts.Bins.Kubectl, append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+c.path("kubectl-cache"), "HOME="+c.path("home"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %v: %w\n%s", args, err, errOut.String())
	}
	return out.String(), nil
}
