package deploy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the listener's Prometheus metrics, with SPEC's exact names,
// types and labels.
type Metrics struct {
	Deployments *prometheus.CounterVec
	Duration    *prometheus.HistogramVec
	InProgress  prometheus.Gauge
	Info        *prometheus.GaugeVec
	// RebootRequired and Generation are what the fleet registry knows of
	// the host's system (tools/fleet), refreshed with every heartbeat.
	RebootRequired prometheus.Gauge
	Generation     prometheus.Gauge
}

// NewMetrics registers the listener metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "homelab_deploy_deployments_total",
			Help: "Deployment requests processed, by final status, action and error code.",
		}, []string{"status", "action", "error_code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "homelab_deploy_deployment_duration_seconds",
			Help:    "Deployment execution time in seconds.",
			Buckets: []float64{1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600},
		}, []string{"action", "success"}),
		InProgress: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "homelab_deploy_deployment_in_progress",
			Help: "1 while a deployment runs, else 0.",
		}),
		Info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "homelab_deploy_info",
			Help: "Static listener metadata; always 1.",
		}, []string{"hostname", "tier", "role", "version"}),
		RebootRequired: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "homelab_deploy_reboot_required",
			Help: "1 when the running system's kernel, initrd or kernel modules differ from the booted system's, else 0.",
		}),
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "homelab_deploy_generation",
			Help: "The NixOS system profile generation (0 when unknown).",
		}),
	}
	reg.MustRegister(m.Deployments, m.Duration, m.InProgress, m.Info, m.RebootRequired, m.Generation)
	return m
}
