package cli

import (
	"fmt"
	"strings"

	"github.com/peterbourgon/ff/v4"
)

// applyEnv sets each flag named in vars from its environment variable when
// the flag was not given on the command line. Explicit env vars (rather than
// ff's derived names) keep SPEC's names exact, e.g. build's --timeout reads
// HOMELAB_DEPLOY_BUILD_TIMEOUT while deploy's reads HOMELAB_DEPLOY_TIMEOUT.
func applyEnv(fs ff.Flags, getenv func(string) string, vars map[string]string) error {
	for name, key := range vars {
		f, ok := fs.GetFlag(name)
		if !ok {
			return fmt.Errorf("internal error: no flag --%s for %s", name, key)
		}
		if f.IsSet() {
			continue
		}
		v := getenv(key)
		if v == "" {
			continue
		}
		if err := f.SetValue(v); err != nil {
			return usagef("%s=%q: %v", key, v, err)
		}
	}
	return nil
}

// required returns a usage error naming the first missing value.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.TrimSpace(pairs[i+1]) == "" {
			return usagef("%s is required", pairs[i])
		}
	}
	return nil
}

// interspersed lets flags follow positional arguments, as in
// `deploy deploy.prod.myhost --branch main`: ff stops parsing flags at the
// first positional argument, so the leftovers are parsed here against the
// same flag set. A "--" ends flag parsing.
func interspersed(fs ff.Flags, args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "h" || name == "help" {
			return nil, ff.ErrHelp
		}
		f, ok := fs.GetFlag(name)
		if !ok {
			return nil, usagef("unknown flag %s", a)
		}
		isBool := f.GetPlaceholder() == ""
		if !hasValue {
			if isBool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, usagef("flag %s needs a value", a)
				}
				i++
				value = args[i]
			}
		}
		if err := f.SetValue(value); err != nil {
			return nil, usagef("flag %s: %v", a, err)
		}
	}
	return pos, nil
}
