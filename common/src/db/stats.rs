//! Read models for dashboards: hooktop and the admin API's analytics and health.
