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
// same flag set. A "--" ends flag parsing. Root flags (--log-level,
// --log-format) given here already took effect in setupLogging, which reads
// the same leftovers with splitArgs.
func interspersed(fs ff.Flags, args []string) ([]string, error) {
	pos, flags, err := splitArgs(fs, args)
	if err != nil {
		return nil, err
	}
	for _, f := range flags {
		if err := f.flag.SetValue(f.value); err != nil {
			return nil, usagef("flag %s: %v", f.arg, err)
		}
	}
	return pos, nil
}

// flagArg is one flag found among the arguments, with its value.
type flagArg struct {
	flag  ff.Flag
	arg   string // as given, e.g. --timeout=10m
	value string
}

// splitArgs separates args into positional arguments and flags of fs (its
// parents' included), without setting anything.
func splitArgs(fs ff.Flags, args []string) (pos []string, flags []flagArg, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), flags, nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "h" || name == "help" {
			return nil, nil, ff.ErrHelp
		}
		f, ok := fs.GetFlag(name)
		if !ok {
			return nil, nil, usagef("unknown flag %s", a)
		}
		isBool := f.GetPlaceholder() == ""
		if !hasValue {
			if isBool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, nil, usagef("flag %s needs a value", a)
				}
				i++
				value = args[i]
			}
		}
		flags = append(flags, flagArg{flag: f, arg: a, value: value})
	}
	return pos, flags, nil
}
