package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestShippedExamples keeps the configurations the repository ships
// loadable: the sample for audgate run and the Kubernetes ConfigMap.
func TestShippedExamples(t *testing.T) {
	root := filepath.Join("..", "..")
	env := func(k string) (string, bool) { return "from-env-" + k, true }
	t.Run("testdata/audgate.yaml", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, "testdata", "audgate.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(raw, env); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("docs/configuration.md, A complete example", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, "docs", "configuration.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, section, _ := strings.Cut(string(raw), "\n## A complete example\n")
		_, block, ok := strings.Cut(section, "```yaml\n")
		doc, _, closed := strings.Cut(block, "```\n")
		if !ok || !closed {
			t.Fatal("docs/configuration.md: no ```yaml block under \"A complete example\"")
		}
		if _, err := Parse([]byte(doc), env); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("deploy/kubernetes/bundle-service/configmap.yaml", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", "bundle-service", "configmap.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		if err := yaml.Unmarshal(raw, &cm); err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse([]byte(cm.Data["audgate.yaml"]), env)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cfg.Policy.OPA["bundles"]; !ok {
			t.Error("the fleet variant has no bundles")
		}
	})
	t.Run("deploy/kubernetes/configmap.yaml", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, "deploy", "kubernetes", "configmap.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		if err := yaml.Unmarshal(raw, &cm); err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse([]byte(cm.Data["audgate.yaml"]), env)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.AdminListen != "0.0.0.0:9090" {
			t.Errorf("admin_listen = %q: probes reach the pod IP, not loopback", cfg.Server.AdminListen)
		}
	})
}
