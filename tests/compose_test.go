package tests

import (
	"context"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// No Docker engine runs here, so docker-compose.yml is checked the way
// `docker compose` reads it: through the compose-spec loader, with its
// schema validation, interpolation and normalization.
func TestDockerComposeLoads(t *testing.T) {
	ctx := context.Background()
	details, err := loader.LoadConfigFiles(ctx, []string{"../docker-compose.yml"}, "..")
	if err != nil {
		t.Fatalf("reading docker-compose.yml: %v", err)
	}
	details.Environment = types.Mapping{}
	project, err := loader.LoadWithContext(ctx, *details, func(o *loader.Options) {
		o.SetProjectName("odsflow", true)
	})
	if err != nil {
		t.Fatalf("docker-compose.yml does not load as a compose project: %v", err)
	}

	// The published ports are the defaults of design §7, on loopback only.
	want := map[string]string{"postgres": "5432", "kafka": "9092", "schema-registry": "8081"}
	for name, port := range want {
		svc, ok := project.Services[name]
		if !ok {
			t.Errorf("service %q missing", name)
			continue
		}
		found := false
		for _, p := range svc.Ports {
			if p.HostIP != "127.0.0.1" {
				t.Errorf("service %q publishes %s on %q: want 127.0.0.1 only", name, p.Published, p.HostIP)
			}
			found = found || p.Published == port
		}
		if !found {
			t.Errorf("service %q does not publish port %s", name, port)
		}
		if svc.HealthCheck == nil {
			t.Errorf("service %q has no healthcheck", name)
		}
	}
	pg := project.Services["postgres"]
	if db := pg.Environment["POSTGRES_DB"]; db == nil || *db != "ods" {
		t.Errorf("postgres POSTGRES_DB = %v, want ods", db)
	}
	if pw := pg.Environment["POSTGRES_PASSWORD"]; pw == nil || *pw != "postgres" {
		t.Errorf("postgres password default = %v, want postgres (ODS_DSN's default)", pw)
	}
}
