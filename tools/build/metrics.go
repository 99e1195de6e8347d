package build

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric status label values.
const (
	statusSuccess = "success"
	statusFailure = "failure"
)

// Metrics are the builder's Prometheus metrics, with SPEC's exact names,
// types and labels. repo comes from the configuration and host from the
// repository's own nixosConfigurations, never from a request, so label
// cardinality is bounded by what the operator configured.
type Metrics struct {
	Builds      *prometheus.CounterVec
	HostBuilds  *prometheus.CounterVec
	Duration    *prometheus.HistogramVec
	LastBuild   *prometheus.GaugeVec
	LastSuccess *prometheus.GaugeVec
	LastFailure *prometheus.GaugeVec
}

// NewMetrics registers the builder metrics with reg and sets the build
// counters of each repository in repos to zero, so rate() works from the
// first scrape.
func NewMetrics(reg prometheus.Registerer, repos []string) *Metrics {
	m := &Metrics{
		Builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "homelab_deploy_builds_total",
			Help: "Build requests processed, by repository and outcome (success when every host built).",
		}, []string{"repo", "status"}),
		HostBuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "homelab_deploy_build_host_total",
			Help: "Host builds processed, by repository, host and outcome.",
		}, []string{"repo", "host", "status"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "homelab_deploy_build_duration_seconds",
			Help:    "Build time per host in seconds.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200},
		}, []string{"repo", "host"}),
		LastBuild: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "homelab_deploy_build_last_timestamp",
			Help: "Unix time of the last build attempt of a repository.",
		}, []string{"repo"}),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "homelab_deploy_build_last_success_timestamp",
			Help: "Unix time of the last build of a repository in which every host built.",
		}, []string{"repo"}),
		LastFailure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "homelab_deploy_build_last_failure_timestamp",
			Help: "Unix time of the last build of a repository in which a host (or the host listing) failed.",
		}, []string{"repo"}),
	}
	reg.MustRegister(m.Builds, m.HostBuilds, m.Duration, m.LastBuild, m.LastSuccess, m.LastFailure)
	for _, r := range repos {
		m.Builds.WithLabelValues(r, statusSuccess)
		m.Builds.WithLabelValues(r, statusFailure)
	}
	return m
}

func (m *Metrics) host(repo, host string, ok bool, d time.Duration) {
	if m == nil {
		return
	}
	m.HostBuilds.WithLabelValues(repo, host, status(ok)).Inc()
	m.Duration.WithLabelValues(repo, host).Observe(d.Seconds())
}

func (m *Metrics) build(repo string, ok bool, at time.Time) {
	if m == nil {
		return
	}
	ts := float64(at.UnixNano()) / 1e9
	m.Builds.WithLabelValues(repo, status(ok)).Inc()
	m.LastBuild.WithLabelValues(repo).Set(ts)
	if ok {
		m.LastSuccess.WithLabelValues(repo).Set(ts)
	} else {
		m.LastFailure.WithLabelValues(repo).Set(ts)
	}
}

func status(ok bool) string {
	if ok {
		return statusSuccess
	}
	return statusFailure
}
