package demo

import "context"

// startBuilder starts the builder over the example flake. It reports
// whether a builder runs.
func (d *Demo) startBuilder(ctx context.Context, o Options) (bool, error) {
	return false, nil
}
