// Package natsauth renders NATS server authorization blocks from the
// permission table in package protocol. The nats-config command, the demo and
// the tests all go through it, so they agree on what each credential may do.
package natsauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// User is one NKey user of the authorization block.
type User struct {
	// Comment says what the credential is for (e.g. "listener testhost1").
	Comment     string
	Nkey        string
	Permissions protocol.Permissions
}

// Render returns a NATS server configuration fragment:
//
//	authorization { users = [ ... ] }
func Render(users []User) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		if u.Comment != "" {
			fmt.Fprintf(&b, "    # %s\n", strings.ReplaceAll(u.Comment, "\n", " "))
		}
		fmt.Fprintf(&b, "    { nkey: %s\n", quote(u.Nkey))
		b.WriteString("      permissions: {\n")
		fmt.Fprintf(&b, "        publish: %s\n", list(u.Permissions.Publish))
		fmt.Fprintf(&b, "        subscribe: %s\n", list(u.Permissions.Subscribe))
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// JSONUser is the shape of one user in NixOS services.nats.settings.
type JSONUser struct {
	Nkey        string `json:"nkey"`
	Permissions struct {
		Publish   []string `json:"publish"`
		Subscribe []string `json:"subscribe"`
	} `json:"permissions"`
}

// RenderJSON returns {"authorization": {"users": [...]}} for
// services.nats.settings.
func RenderJSON(users []User) ([]byte, error) {
	out := struct {
		Authorization struct {
			Users []JSONUser `json:"users"`
		} `json:"authorization"`
	}{}
	out.Authorization.Users = []JSONUser{}
	for _, u := range users {
		var j JSONUser
		j.Nkey = u.Nkey
		j.Permissions.Publish = nonNil(u.Permissions.Publish)
		j.Permissions.Subscribe = nonNil(u.Permissions.Subscribe)
		out.Authorization.Users = append(out.Authorization.Users, j)
	}
	// No HTML escaping: '>' stays '>' for people reading the output.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func list(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quote renders a NATS config string. Subjects and keys hold no quotes or
// backslashes (they are validated before they get here), but be safe. The
// NATS config lexer knows only \xXX, \t, \n, \r, \" and \\ escapes, so JSON
// quoting (which writes \u003e for '>') must not be used here.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
