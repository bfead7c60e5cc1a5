-- The one shared network ports are created on, present from the first start
-- (openstack port create --network appliance).
INSERT INTO networks (id, project_id, name, description, shared)
VALUES ('6a1c2c7e-4f1e-4d8a-9c55-3b1f0a7d2e10', 'default', 'appliance',
        'default shared network of the appliance', 1);
