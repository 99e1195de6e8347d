package protocol

import (
	"reflect"
	"strings"
	"testing"
)

func TestExpandSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		templates []string
		vars      TemplateVars
		want      []string
		wantErr   string
	}{
		{"defaults with role", DefaultDeploySubjects(), TemplateVars{"dns1", "prod", "dns"},
			[]string{"deploy.prod.dns1", "deploy.prod.all", "deploy.prod.role.dns"}, ""},
		{"role skipped without role", DefaultDeploySubjects(), TemplateVars{"testhost1", "test", ""},
			[]string{"deploy.test.testhost1", "deploy.test.all"}, ""},
		{"custom and duplicates", []string{"fleet.<tier>.<hostname>", "fleet.<tier>.<hostname>", "deploy.<tier>.all"}, TemplateVars{"h", "test", ""},
			[]string{"fleet.test.h", "deploy.test.all"}, ""},
		{"unknown placeholder", []string{"deploy.<zone>.x"}, TemplateVars{"h", "test", ""}, nil, "unknown placeholder"},
		{"wildcard", []string{"deploy.<tier>.>"}, TemplateVars{"h", "test", ""}, nil, "unknown placeholder"},
		{"star", []string{"deploy.*.x"}, TemplateVars{"h", "test", ""}, nil, "no wildcards"},
		{"reply subject", []string{"deploy.responses.<hostname>"}, TemplateVars{"h", "test", ""}, nil, "reply subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExpandSubjects(tt.templates, tt.vars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseDeploySubject(t *testing.T) {
	t.Parallel()
	ok := map[string]Target{
		"deploy.test.testhost1":  {Subject: "deploy.test.testhost1", Kind: TargetHost, Tier: "test", Name: "testhost1"},
		"deploy.prod.all":        {Subject: "deploy.prod.all", Kind: TargetAll, Tier: "prod"},
		"deploy.prod.role.dns":   {Subject: "deploy.prod.role.dns", Kind: TargetRole, Tier: "prod", Name: "dns"},
		"deploy.test.group.web1": {Subject: "deploy.test.group.web1", Kind: TargetCustom},
	}
	for s, want := range ok {
		got, err := ParseDeploySubject(s)
		if err != nil || got != want {
			t.Errorf("ParseDeploySubject(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "deploy", "deploy.test", "deploy.test.*", "deploy.test.>", "deploy.>", "deploy.responses.x", "deploy.discover", "build.repo.all", "deploy.test.role", "deploy.test.a b", "deploy..x", "deploy.test.role.*", "deploy.test.role.a.b", "deploy.staging.x", "deploy.tset.host.x"} {
		if _, err := ParseDeploySubject(s); err == nil {
			t.Errorf("ParseDeploySubject(%q) accepted", s)
		}
	}
}

// A mistyped tier is reported as such, with the tiers there are, instead of
// going out as a custom subject that the credential may not publish to.
func TestParseDeploySubjectUnknownTier(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"deploy.tset.host", "deploy.staging.all", "deploy.Test.role.dns", "deploy.lab.a.b"} {
		_, err := ParseDeploySubject(s)
		if err == nil {
			t.Errorf("ParseDeploySubject(%q) accepted", s)
			continue
		}
		tier := strings.Split(s, ".")[1]
		for _, want := range []string{`unknown tier "` + tier + `"`, "test, prod", "deploy.<tier>.<hostname>"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseDeploySubject(%q) = %v; want it to mention %s", s, err, want)
			}
		}
	}
}

func FuzzExpandSubjects(f *testing.F) {
	f.Add("deploy.<tier>.<hostname>", "h", "test", "r")
	f.Add("deploy.<tier>.role.<role>", "h", "prod", "")
	f.Fuzz(func(t *testing.T, tpl, host, tier, role string) {
		subs, err := ExpandSubjects([]string{tpl}, TemplateVars{host, tier, role})
		if err != nil {
			return
		}
		for _, s := range subs {
			if err := ValidateLiteralSubject(s); err != nil {
				t.Fatalf("expanded to invalid subject %q: %v", s, err)
			}
		}
	})
}

func FuzzParseDeploySubject(f *testing.F) {
	f.Add("deploy.test.host")
	f.Add("deploy.prod.role.dns")
	f.Add("deploy.test.>")
	f.Add("deploy.tset.host")
	f.Add("deploy.test.group.web1")
	f.Add("deploy.prod.role.dns.x")
	f.Add("deploy.staging.all")
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseDeploySubject(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(s, "*> \t\r\n") || !strings.HasPrefix(s, "deploy.") || tg.Subject != s {
			t.Fatalf("accepted %q as %+v", s, tg)
		}
		if ValidateTier(strings.Split(s, ".")[1]) != nil {
			t.Fatalf("accepted %q whose second token is not a tier", s)
		}
	})
}
