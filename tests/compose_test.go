package tests

import (
	"context"
	"strings"
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
	// The pipeline: config/ods.yaml, pointed at the services by name, its
	// state on a volume, started once its servers are healthy.
	ods, ok := project.Services["odsflow"]
	if !ok {
		t.Fatal("service odsflow missing")
	}
	if ods.Build == nil || strings.Join(ods.Command, " ") != "run config/ods.yaml" {
		t.Errorf("odsflow: build %v, command %q: want the image built here running config/ods.yaml", ods.Build, ods.Command)
	}
	for k, v := range map[string]string{
		"KAFKA_BROKERS": "kafka:19092", "SCHEMA_REGISTRY_URL": "http://schema-registry:8081",
		"ODS_DSN": "postgres://postgres:postgres@postgres:5432/ods?sslmode=disable", "ODS_STATE_DIR": "/data/state",
		"ODS_CONSUMER_GROUP": "odsflow-ods", "ODS_DLQ_TOPIC": "odsflow.dlq", "CDC_TOPIC_PREFIX": "fulfillment.transactions_schema",
	} {
		if got := ods.Environment[k]; got == nil || *got != v {
			t.Errorf("odsflow %s = %v, want %s", k, got, v)
		}
	}
	for _, dep := range []string{"postgres", "kafka", "schema-registry"} {
		if d, ok := ods.DependsOn[dep]; !ok || d.Condition != "service_healthy" {
			t.Errorf("odsflow does not wait for %s to be healthy", dep)
		}
	}
	if len(ods.Volumes) != 1 || ods.Volumes[0].Target != "/data" {
		t.Errorf("odsflow volumes %v: want its state on a volume at /data", ods.Volumes)
	}
	pg := project.Services["postgres"]
	if db := pg.Environment["POSTGRES_DB"]; db == nil || *db != "ods" {
		t.Errorf("postgres POSTGRES_DB = %v, want ods", db)
	}
	if pw := pg.Environment["POSTGRES_PASSWORD"]; pw == nil || *pw != "postgres" {
		t.Errorf("postgres password default = %v, want postgres (ODS_DSN's default)", pw)
	}
}
