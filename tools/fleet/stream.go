package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/homelab-deploy/homelab-deploy/protocol"
)

// streamConfig is the bucket's stream, in the JetStream API's JSON. It is
// a key-value bucket as nats.go and natscli make one (so `nats kv get`
// reads it), with these differences: history 1; entries of at most
// protocol.MaxFleetEntrySize bytes; and no rollup headers, so that a
// listener, which may write only its own key, cannot erase the others'
// entries with a Nats-Rollup: all header. It uses only fields that
// nats-server 2.9 knows (no limit markers, per-message TTLs or
// compression, which came in 2.10 and 2.11).
type streamConfig struct {
	Name              string   `json:"name"`
	Description       string   `json:"description,omitempty"`
	Subjects          []string `json:"subjects"`
	Retention         string   `json:"retention"`
	MaxConsumers      int      `json:"max_consumers"`
	MaxMsgs           int64    `json:"max_msgs"`
	MaxBytes          int64    `json:"max_bytes"`
	MaxAge            int64    `json:"max_age"`
	MaxMsgsPerSubject int64    `json:"max_msgs_per_subject"`
	MaxMsgSize        int32    `json:"max_msg_size"`
	Discard           string   `json:"discard"`
	Storage           string   `json:"storage"`
	Replicas          int      `json:"num_replicas"`
	Duplicates        int64    `json:"duplicate_window"`
	AllowDirect       bool     `json:"allow_direct"`
	DenyDelete        bool     `json:"deny_delete"`
	AllowRollup       bool     `json:"allow_rollup_hdrs"`
	// Fields that would send the bucket's entries elsewhere; an existing
	// bucket that has them is refused (see checkStream).
	RePublish *json.RawMessage  `json:"republish,omitempty"`
	Mirror    *json.RawMessage  `json:"mirror,omitempty"`
	Sources   []json.RawMessage `json:"sources,omitempty"`
}

func newStreamConfig(replicas int) streamConfig {
	return streamConfig{
		Name:              protocol.FleetStream,
		Description:       "homelab-deploy fleet registry: one entry per listener, key <tier>.<hostname>",
		Subjects:          []string{protocol.FleetKeyPrefix + ">"},
		Retention:         "limits",
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        protocol.MaxFleetEntrySize,
		Discard:           "new",
		Storage:           "file",
		Replicas:          replicas,
		Duplicates:        int64(2 * time.Minute),
		AllowDirect:       true,
		DenyDelete:        true,
	}
}

type streamInfo struct {
	Config  streamConfig `json:"config"`
	Cluster *struct {
		Leader string `json:"leader"`
	} `json:"cluster,omitempty"`
}

// checkStream refuses a bucket whose stream could send entries anywhere
// but to their readers: more subjects than the bucket's keys, a
// republish, a mirror or sources.
func checkStream(c streamConfig) error {
	switch {
	case !slices.Equal(c.Subjects, []string{protocol.FleetKeyPrefix + ">"}):
		return fmt.Errorf("stream %s captures %q instead of %s>", protocol.FleetStream, c.Subjects, protocol.FleetKeyPrefix)
	case c.RePublish != nil:
		return fmt.Errorf("stream %s republishes its entries", protocol.FleetStream)
	case c.Mirror != nil || len(c.Sources) > 0:
		return fmt.Errorf("stream %s is a mirror or has sources", protocol.FleetStream)
	case c.MaxMsgsPerSubject < 1:
		return fmt.Errorf("stream %s keeps no message per key", protocol.FleetStream)
	}
	return nil
}

// ErrBadBucket: a stream of the bucket's name exists with a configuration
// this program does not write to.
var ErrBadBucket = errors.New("the fleet registry bucket has a configuration homelab-deploy does not use; delete it (`nats stream rm " + protocol.FleetStream + "`, with a credential allowed to) and the listeners create it again")

// ensureStream makes sure the bucket exists and is sound: it reads the
// stream's info, and creates it when it is missing. replicas 0 means
// three on a JetStream cluster and one on a single server. Listeners that
// start together race to create it; the losers find it made.
func ensureStream(ctx context.Context, r *replies, replicas int, timeout time.Duration) (created bool, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		data, err := r.apiCall(ctx, protocol.FleetStreamInfoSubject, nil, timeout, nil)
		if err == nil {
			return false, checkInfo(data)
		}
		if !errors.Is(err, ErrNoBucket) {
			return false, err
		}
		data, err = createStream(ctx, r, replicas, timeout)
		if err == nil {
			return true, checkInfo(data)
		}
		var ae *APIError
		// Made by another listener a moment ago (maybe with other
		// replicas), or still being made: look again.
		if errors.As(err, &ae) && ae.ErrCode == jsErrStreamNameInUse || errors.Is(err, ErrNoBucket) {
			continue
		}
		return false, fmt.Errorf("create the fleet registry bucket: %w", err)
	}
	return false, fmt.Errorf("create the fleet registry bucket: %w: other listeners kept creating it", ErrNoAnswer)
}

// createStream creates the bucket's stream; with replicas 0 it tries
// three replicas first and falls back to one where the server cannot
// have more (a single server, a cluster of two).
func createStream(ctx context.Context, r *replies, replicas int, timeout time.Duration) ([]byte, error) {
	tries := []int{replicas}
	if replicas == 0 {
		tries = []int{3, 1}
	}
	var err error
	for i, n := range tries {
		body, _ := json.Marshal(newStreamConfig(n))
		var data []byte
		data, err = r.apiCall(ctx, protocol.FleetStreamCreateSubject, body, timeout, nil)
		var ae *APIError
		if errors.As(err, &ae) && (ae.ErrCode == jsErrReplicasUnsupported || ae.ErrCode == jsErrInsufficient) && i+1 < len(tries) {
			continue
		}
		return data, err
	}
	return nil, err
}

func checkInfo(data []byte) error {
	var info streamInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return fmt.Errorf("stream info of %s: %v", protocol.FleetStream, err)
	}
	if err := checkStream(info.Config); err != nil {
		return fmt.Errorf("%w: %v", ErrBadBucket, err)
	}
	return nil
}
