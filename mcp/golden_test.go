package mcpserver_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mcpserver "github.com/homelab-deploy/homelab-deploy/mcp"
	"github.com/homelab-deploy/homelab-deploy/tools/registry"
)

// TestSchemaSnapshots keeps every tool's MCP description (title,
// description, annotations, input and output schema) in
// testdata/schemas/<tool>.json, so that any change to what assistants see
// shows up in review. After an intended change, regenerate with
//
//	UPDATE_GOLDEN=1 go test ./mcp/ -run TestSchemaSnapshots
func TestSchemaSnapshots(t *testing.T) {
	dir := filepath.Join("testdata", "schemas")
	update := os.Getenv("UPDATE_GOLDEN") == "1"
	if update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, tl := range registry.New().All() {
		name := tl.Name + ".json"
		want[name] = true
		got, err := json.MarshalIndent(mcpserver.Describe(tl), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join(dir, name)
		if update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		old, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: no snapshot (%v); run UPDATE_GOLDEN=1 go test ./mcp/ -run TestSchemaSnapshots", tl.Name, err)
			continue
		}
		if !bytes.Equal(old, got) {
			t.Errorf("%s: the tool's MCP schema changed; if intended, run UPDATE_GOLDEN=1 go test ./mcp/ -run TestSchemaSnapshots and review the diff.\n--- %s\n%s\n--- now\n%s", tl.Name, path, old, got)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") && !want[e.Name()] {
			if update {
				_ = os.Remove(filepath.Join(dir, e.Name()))
				continue
			}
			t.Errorf("%s: snapshot of a tool that no longer exists; run UPDATE_GOLDEN=1 to remove it", e.Name())
		}
	}
}
