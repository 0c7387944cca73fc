//! The OpenAPI 3 document of the API, derived from the route table ([`super::routes`]) so it
//! lists exactly what the router serves.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::server::Runtime;

pub(super) async fn serve(State(_rt): State<Arc<Runtime>>) -> Json<Value> {
    Json(openapi())
}

/// The OpenAPI document of every route.
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in super::routes() {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
        }));
        let operation_id = format!(
            "{}{}",
            route.method.as_str().to_ascii_lowercase(),
            route
                .path
                .split(['/', '.', '{', '}'])
                .filter(|s| !s.is_empty() && *s != "v1")
                .map(|s| {
                    let mut c = s.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<String>()
        );
        let mut op = json!({
            "summary": route.summary,
            "operationId": operation_id,
            "parameters": parameters,
            "responses": {
                "200": { "description": "success" },
                "default": {
                    "description": "an error, with a stable code",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
        if route.public {
            op["security"] = json!([]);
        }
        let entry = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "weir", "version": env!("CARGO_PKG_VERSION") },
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": { "type": "string" },
                                "message": { "type": "string" }
                            }
                        }
                    }
                }
            }
        }
    })
}
