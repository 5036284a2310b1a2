package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"

	// Annotations containerd's own exporter writes; its importer names the
	// image after annotationImageName.
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// epoch is every mtime and the image's creation time, for stable digests.
var epoch = time.Unix(0, 0).UTC()

type imageConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	User       string   `json:"User,omitempty"`
	createdBy  string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// blob is content-addressed data destined for blobs/sha256/.
type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

func (b blob) desc(mediaType string) descriptor {
	return descriptor{MediaType: mediaType, Digest: b.digest, Size: int64(len(b.data))}
}

// writeImage writes an OCI image layout, as a tarball, holding one image made of
// one uncompressed layer.
func writeImage(out, ref string, files []file, cfg imageConfig) error {
	layerData, err := tarFiles(files)
	if err != nil {
		return err
	}
	layer := newBlob(layerData)
	plat := platform{Architecture: runtime.GOARCH, OS: "linux"}
	config, err := marshalBlob(map[string]any{
		"created":      epoch.Format(time.RFC3339),
		"architecture": plat.Architecture,
		"os":           plat.OS,
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layer.digest}},
		"history":      []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": cfg.createdBy}},
	})
	if err != nil {
		return err
	}
	manifest, err := marshalBlob(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        config.desc(mediaConfig),
		"layers":        []descriptor{layer.desc(mediaLayer)},
	})
	if err != nil {
		return err
	}
	md := manifest.desc(mediaManifest)
	md.Platform = &plat
	md.Annotations = map[string]string{annotationImageName: ref, annotationRefName: refName(ref)}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []descriptor{md}})
	if err != nil {
		return fmt.Errorf("failed to encode index: %w", err)
	}
	entries := []file{
		reg("oci-layout", 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		reg("index.json", 0o644, index),
		dir("blobs", 0o755), dir("blobs/sha256", 0o755),
	}
	for _, b := range []blob{config, layer, manifest} {
		entries = append(entries, reg("blobs/sha256/"+strings.TrimPrefix(b.digest, "sha256:"), 0o644, b.data))
	}
	archive, err := tarFiles(entries)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, archive, 0o644); err != nil {
		return fmt.Errorf("failed to write %s: %w", out, err)
	}
	return nil
}

// refName is what OCI tools expect in org.opencontainers.image.ref.name: the tag.
func refName(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}

func marshalBlob(v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, fmt.Errorf("failed to encode image JSON: %w", err)
	}
	return newBlob(data), nil
}

func tarFiles(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{
			Typeflag: f.typeflag, Name: f.name, Linkname: f.linkname, Mode: f.mode,
			Size: int64(len(f.data)), ModTime: epoch, Format: tar.FormatPAX,
			Uname: "root", Gname: "root",
		}
		if f.typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("failed to write tar header for %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("failed to write %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish tar: %w", err)
	}
	return buf.Bytes(), nil
}
