//! The end-to-end checks that need no cluster, in one test binary: the documents against
//! the code, the contract between the two binaries, and the TimescaleDB SQL on PGlite.

mod contract;
mod dcat;
mod docs;
mod images;
mod timescaledb_sql;
