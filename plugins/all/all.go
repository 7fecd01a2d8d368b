// Package all registers every odsflow plugin with Benthos: the binary
// imports it once, and each plugin package below registers its components in
// its init function. A plugin package that is not imported here does not
// exist for users; TestEveryPluginPackageIsImported guards that.
package all

import (
	// schema_registry_decode and schema_registry_encode.
	_ "github.com/odsflow/odsflow/plugins/confluent"
	// debezium_unwrap.
	_ "github.com/odsflow/odsflow/plugins/debezium"
	// cdc_join.
	_ "github.com/odsflow/odsflow/plugins/join"
	// content_to_metadata.
	_ "github.com/odsflow/odsflow/plugins/message"
	// kafka_franz input and output.
	_ "github.com/odsflow/odsflow/plugins/kafka"
	// pg_upsert output.
	_ "github.com/odsflow/odsflow/plugins/postgres"
)
