-- Pages are listed in creation order per tenant: walk an index instead of sorting.
CREATE INDEX scim_users_page ON scim_users (tenant, seq);
CREATE INDEX scim_groups_page ON scim_groups (tenant, seq);
-- A user's groups: covering, so the lookup never reads the table (and, on SQLite, so the
-- planner prefers it to the primary key's tenant prefix).
DROP INDEX scim_group_members_member;
CREATE INDEX scim_group_members_member ON scim_group_members (tenant, member_id, group_id);
