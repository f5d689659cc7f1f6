"""Authorization matrix: with security.authorizer=true, every Kafka API the broker
advertises is sent by each principal (alice of tenant acme, bob of tenant globex, the
anonymous plaintext client, the super user admin) against each tenant's resources, and
is allowed exactly when the principal owns the resource (or is the super user);
otherwise it fails with the error Apache Kafka gives.  Lists (Metadata for all topics,
ListGroups, DescribeAcls, OffsetFetch for all partitions, DescribeUserScramCredentials)
never show one tenant another tenant's names.

ACLs: alice ALL on prefix `acme.` for topics, groups and transactional ids, bob the same
on `globex.`; made through the Kafka API (confluent-kafka AdminClient.create_acls, as
admin) and through `quiver acl create`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)
from kafka.protocol.admin.acl import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest
from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest, DescribeClientQuotasRequest
from kafka.protocol.admin.configs import AlterConfigsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest
from kafka.protocol.admin.groups import DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest
from kafka.protocol.admin.topics import (CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest,
                                         DeleteTopicsRequest)
from kafka.protocol.admin.transactions import DescribeProducersRequest
from kafka.protocol.admin.users import AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest
from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
                                          OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest)
from kafka.protocol.consumer.offsets import OffsetForLeaderEpochRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.transaction import InitProducerIdRequest

import kproto
import securitykit as sk
from clients import DeliveryLog
from harness import wait_until

S256 = "SCRAM-SHA-256"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}
TENANTS = {"acme": ("alice", "acme."), "globex": ("bob", "globex.")}
WHO = ["alice", "bob", "anonymous", "admin"]
UNKNOWN_TOPIC_OR_PARTITION = 3
MEMBER_ID_REQUIRED = 79
TOPIC_RESOURCE, GROUP_RESOURCE, BROKER_RESOURCE = 2, 3, 4


# -- the broker and its principals --------------------------------------------------------

class Env:
    def __init__(self, broker, sasl):
        self.broker, self.sasl = broker, sasl
        self.passwords = dict(PASSWORDS)
        self._conns: dict = {}

    def conn(self, who: str, fresh: bool = False) -> sk.KConn:
        """who's connection: SCRAM-SHA-256 on the SASL listener, or the plaintext main
        listener for anonymous.  Reopened when a request broke it."""
        if fresh or who not in self._conns:
            if who in self._conns:
                self._conns[who].close()
            if who == "anonymous":
                self._conns[who] = sk.connect(self.broker.bootstrap, timeout=20)
            else:
                self._conns[who] = sk.connect(self.sasl, S256, who, self.passwords[who], timeout=20)
        return self._conns[who]

    def rdkafka(self, who: str, **extra) -> dict:
        if who == "anonymous":
            return sk.rdkafka_conf(self.broker.bootstrap, **extra)
        return sk.rdkafka_conf(self.sasl, "SASL_PLAINTEXT", S256, who, self.passwords[who], **extra)

    def close(self):
        for c in self._conns.values():
            c.close()


def authz_env(broker_factory) -> Env:
    b, addrs = sk.secure_broker(broker_factory, {"sasl": "SASL_PLAINTEXT"},
                                {"security.authorizer": "true", "security.super_users": "User:admin",
                                 "security.sasl.mechanisms": S256})
    for user, pw in PASSWORDS.items():
        sk.create_user(b, user, pw)
    env = Env(b, addrs["sasl"])

    # ACLs through the Kafka API, as the super user ...
    admin = AdminClient(env.rdkafka("admin"))
    bindings = []
    for tenant, (owner, prefix) in TENANTS.items():
        for rtype in (ResourceType.TOPIC, ResourceType.GROUP):
            bindings.append(AclBinding(rtype, prefix, ResourcePatternType.PREFIXED, f"User:{owner}", "*",
                                       AclOperation.ALL, AclPermissionType.ALLOW))
    bindings.append(AclBinding(ResourceType.TRANSACTIONAL_ID, "acme.", ResourcePatternType.PREFIXED, "User:alice",
                               "*", AclOperation.ALL, AclPermissionType.ALLOW))
    for binding, fut in admin.create_acls(bindings, request_timeout=30).items():
        fut.result(timeout=30)
    # ... and through the CLI
    sk.create_acl(b, "User:bob", "all", transactional_id="globex.", pattern="prefixed")
    return env


# -- raw requests ----------------------------------------------------------------------------

def subscription(topics) -> bytes:
    """ConsumerProtocolSubscription v0."""
    return kproto.i16(0) + kproto.array([kproto.string(t) for t in topics]) + kproto.kbytes(None)


def assignment(topic: str, partitions) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return (kproto.i16(0) + kproto.array([kproto.string(topic) + kproto.array([kproto.i32(p) for p in partitions])])
            + kproto.kbytes(None))


@dataclass
class Member:
    group: str
    member_id: str
    generation: int


def join(conn, group: str, topic: str) -> tuple[int, Optional[Member]]:
    """JoinGroup v5 (twice when the broker asks for a member id) then nothing else.
    Returns (error code, member)."""
    member_id = ""
    for _ in range(2):
        r = conn.call(JoinGroupRequest, 5, group_id=group, session_timeout_ms=60000, rebalance_timeout_ms=60000,
                      member_id=member_id, group_instance_id=None, protocol_type="consumer",
                      protocols=[{"name": "range", "metadata": subscription([topic])}])
        if r.error_code == MEMBER_ID_REQUIRED and not member_id:
            member_id = r.member_id
            continue
        if r.error_code:
            return r.error_code, None
        return 0, Member(group, r.member_id, r.generation_id)
    return r.error_code, None


def sync(conn, m: Member, topic: str) -> int:
    r = conn.call(SyncGroupRequest, 3, group_id=m.group, generation_id=m.generation, member_id=m.member_id,
                  group_instance_id=None, assignments=[{"member_id": m.member_id, "assignment": assignment(topic, [0, 1])}])
    return r.error_code


def heartbeat(conn, m: Member) -> int:
    return conn.call(HeartbeatRequest, 3, group_id=m.group, generation_id=m.generation, member_id=m.member_id,
                     group_instance_id=None).error_code


def leave(conn, m: Member) -> int:
    r = conn.call(LeaveGroupRequest, 3, group_id=m.group, members=[{"member_id": m.member_id, "group_instance_id": None}])
    return r.error_code or next((x.error_code for x in r.members if x.error_code), 0)


def commit(conn, group: str, topic: str, offsets: dict) -> dict:
    """A simple (generation -1) OffsetCommit v8; returns {partition: error code}."""
    r = conn.call(OffsetCommitRequest, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="",
                  group_instance_id=None,
                  topics=[{"name": topic, "partitions": [
                      {"partition_index": p, "committed_offset": o, "committed_leader_epoch": -1,
                       "committed_metadata": ""} for p, o in offsets.items()]}])
    return {p.partition_index: p.error_code for t in r.topics for p in t.partitions}


def offset_fetch(conn, group: str, topics: Optional[list]):
    """OffsetFetch v7; topics None asks for every partition of the group."""
    req_topics = None if topics is None else [{"name": t, "partition_indexes": [0, 1]} for t in topics]
    return conn.call(OffsetFetchRequest, 7, group_id=group, topics=req_topics, require_stable=False)


def first_partition_code(resp, topics_attr="topics", parts_attr="partitions") -> int:
    """The first non-zero partition error of a topics/partitions answer (0 if none)."""
    codes = [p.error_code for t in getattr(resp, topics_attr) for p in getattr(t, parts_attr)]
    assert codes, f"no partitions in the answer: {resp}"
    return next((c for c in codes if c), 0)


def produce(conn, topic: str, value: bytes = b"v", partition: int = 0) -> int:
    return kproto.produce_v3(conn, topic, partition, kproto.encode_batch([kproto.Record(b"k", value)])).error_code


def metadata(conn, topics: Optional[list]):
    req = None if topics is None else [{"name": t} for t in topics]
    return conn.call(MetadataRequest, 12, topics=req, allow_auto_topic_creation=False,
                     include_topic_authorized_operations=False)


def create_topic(conn, name: str, partitions: int = 1) -> int:
    r = conn.call(CreateTopicsRequest, 5, topics=[{"name": name, "num_partitions": partitions, "replication_factor": 1,
                                                   "assignments": [], "configs": []}],
                  timeout_ms=30000, validate_only=False)
    return r.topics[0].error_code


# -- the matrix --------------------------------------------------------------------------------

def owns(who: str, tenant: Optional[str]) -> bool:
    return who == "admin" or (tenant is not None and TENANTS[tenant][0] == who)


@dataclass
class Probe:
    name: str
    api: int
    run: Callable  # (ctx, who, tenant) -> error code
    deny: int  # the error an unauthorized principal gets
    allowed: Optional[set] = None  # codes meaning "allowed"; None: anything but an authorization error
    per_tenant: bool = True
    allowed_for: Callable = owns
    listing: bool = False  # its answer is scanned for other tenants' names


@dataclass
class Ctx:
    env: Env
    members: dict = field(default_factory=dict)  # (who, tenant) -> Member of who's own group
    owner_member: dict = field(default_factory=dict)  # tenant -> Member of the owner in <prefix>g
    answers: list = field(default_factory=list)  # (probe, who, tenant, repr of a listing answer)

    def names(self, tenant):
        prefix = TENANTS[tenant][1]
        return prefix + "t", prefix + "g", prefix


def note(ctx, name, who, tenant, resp):
    ctx.answers.append((name, who, tenant, repr(resp)))


def p_metadata(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = metadata(ctx.env.conn(who), [topic])
    return r.topics[0].error_code


def p_metadata_missing(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    r = metadata(ctx.env.conn(who), [prefix + "missing"])
    return r.topics[0].error_code


def p_metadata_all(ctx, who, tenant):
    r = metadata(ctx.env.conn(who), None)
    note(ctx, "Metadata(all)", who, tenant, [t.name for t in r.topics])
    return next((t.error_code for t in r.topics if t.error_code), 0)


def p_produce(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    return produce(ctx.env.conn(who), topic, f"from-{who}".encode())


def p_fetch(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    return kproto.fetch_v4(ctx.env.conn(who), topic, 0, 0).error_code


def p_list_offsets(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    return kproto.list_offsets_v1(ctx.env.conn(who), topic, 0, kproto.LATEST)[0]


def p_offset_for_leader_epoch(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(OffsetForLeaderEpochRequest, 3, replica_id=-1, topics=[
        {"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": -1, "leader_epoch": 0}]}])
    return first_partition_code(r)


def p_describe_producers(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(DescribeProducersRequest, 0, topics=[{"name": topic, "partition_indexes": [0]}])
    return first_partition_code(r)


def p_create_topics(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    return create_topic(ctx.env.conn(who), f"{prefix}new.{who}")


def p_describe_configs_topic(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(DescribeConfigsRequest, 1, resources=[
        {"resource_type": TOPIC_RESOURCE, "resource_name": topic, "configuration_keys": None}], include_synonyms=False)
    return r.results[0].error_code


def p_alter_configs_topic(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(AlterConfigsRequest, 1, resources=[
        {"resource_type": TOPIC_RESOURCE, "resource_name": topic,
         "configs": [{"name": "retention.ms", "value": "86400000"}]}], validate_only=False)
    return r.responses[0].error_code


def p_incremental_alter_configs_topic(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(IncrementalAlterConfigsRequest, 0, resources=[
        {"resource_type": TOPIC_RESOURCE, "resource_name": topic,
         "configs": [{"name": "retention.ms", "config_operation": 0, "value": "172800000"}]}], validate_only=False)
    return r.responses[0].error_code


def p_create_partitions(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    r = ctx.env.conn(who).call(CreatePartitionsRequest, 1, topics=[
        {"name": f"{prefix}victim.{who}", "count": 2, "assignments": None}], timeout_ms=30000, validate_only=False)
    return r.results[0].error_code


def p_delete_records(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    r = ctx.env.conn(who).call(DeleteRecordsRequest, 1, topics=[
        {"name": f"{prefix}victim.{who}", "partitions": [{"partition_index": 0, "offset": 1}]}], timeout_ms=30000)
    return first_partition_code(r)


def p_delete_topics(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    r = ctx.env.conn(who).call(DeleteTopicsRequest, 5, topic_names=[f"{prefix}victim.{who}"], timeout_ms=30000)
    return r.responses[0].error_code


def p_find_coordinator_group(ctx, who, tenant):
    _, group, _ = ctx.names(tenant)
    return ctx.env.conn(who).call(FindCoordinatorRequest, 3, key=group, key_type=0).error_code


def p_find_coordinator_txn(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    return ctx.env.conn(who).call(FindCoordinatorRequest, 3, key=prefix + "tx", key_type=1).error_code


def p_init_producer_id_txn(ctx, who, tenant):
    _, _, prefix = ctx.names(tenant)
    return ctx.env.conn(who).call(InitProducerIdRequest, 3, transactional_id=prefix + "tx",
                                  transaction_timeout_ms=60000, producer_id=-1, producer_epoch=-1).error_code


def p_join_group(ctx, who, tenant):
    topic, group, _ = ctx.names(tenant)
    if owns(who, tenant):
        code, m = join(ctx.env.conn(who), f"{group}.life.{who}", topic)
        if m is not None:
            ctx.members[(who, tenant)] = m
        return code
    # an outsider tries to join the owner's live group (one JoinGroup: a broker that let
    # it through answers MEMBER_ID_REQUIRED, and a second one would start a rebalance)
    r = ctx.env.conn(who).call(JoinGroupRequest, 5, group_id=group, session_timeout_ms=60000,
                               rebalance_timeout_ms=60000, member_id="", group_instance_id=None,
                               protocol_type="consumer", protocols=[{"name": "range", "metadata": subscription([topic])}])
    return r.error_code


def _member_for(ctx, who, tenant) -> Member:
    if owns(who, tenant):
        m = ctx.members.get((who, tenant))
        if m is None:
            raise AssertionError(f"{who} has no member in its {tenant} group (JoinGroup failed)")
        return m
    return ctx.owner_member[tenant]  # outsiders act on the owner's member


def p_sync_group(ctx, who, tenant):
    topic, _, _ = ctx.names(tenant)
    return sync(ctx.env.conn(who), _member_for(ctx, who, tenant), topic)


def p_heartbeat(ctx, who, tenant):
    return heartbeat(ctx.env.conn(who), _member_for(ctx, who, tenant))


def p_leave_group(ctx, who, tenant):
    return leave(ctx.env.conn(who), _member_for(ctx, who, tenant))


def p_offset_commit(ctx, who, tenant):
    topic, group, _ = ctx.names(tenant)
    codes = commit(ctx.env.conn(who), f"{group}.commit", topic, {0: 3, 1: 0})
    return next((c for c in codes.values() if c), 0)


def p_offset_fetch(ctx, who, tenant):
    topic, group, _ = ctx.names(tenant)
    r = offset_fetch(ctx.env.conn(who), f"{group}.commit", [topic])
    if r.error_code:
        return r.error_code
    return first_partition_code(r)


def p_offset_fetch_all(ctx, who, tenant):
    _, group, _ = ctx.names(tenant)
    r = offset_fetch(ctx.env.conn(who), f"{group}.commit", None)
    note(ctx, "OffsetFetch(all)", who, tenant, r)
    if r.error_code:
        return r.error_code
    return next((p.error_code for t in r.topics for p in t.partitions if p.error_code), 0)


def p_describe_groups(ctx, who, tenant):
    _, group, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(DescribeGroupsRequest, 5, groups=[group], include_authorized_operations=False)
    return r.groups[0].error_code


def p_offset_delete(ctx, who, tenant):
    topic, group, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(OffsetDeleteRequest, 0, group_id=f"{group}.odel.{who}",
                               topics=[{"name": topic, "partitions": [{"partition_index": 0}]}])
    if r.error_code:
        return r.error_code
    return first_partition_code(r)


def p_delete_groups(ctx, who, tenant):
    _, group, _ = ctx.names(tenant)
    r = ctx.env.conn(who).call(DeleteGroupsRequest, 1, groups_names=[f"{group}.del.{who}"])
    return r.results[0].error_code


def p_list_groups(ctx, who, tenant):
    r = ctx.env.conn(who).call(ListGroupsRequest, 4, states_filter=[])
    note(ctx, "ListGroups", who, tenant, [g.group_id for g in r.groups])
    return r.error_code


def p_init_producer_id(ctx, who, tenant):
    return ctx.env.conn(who).call(InitProducerIdRequest, 3, transactional_id=None, transaction_timeout_ms=-1,
                                  producer_id=-1, producer_epoch=-1).error_code


def p_describe_configs_broker(ctx, who, tenant):
    r = ctx.env.conn(who).call(DescribeConfigsRequest, 1, resources=[
        {"resource_type": BROKER_RESOURCE, "resource_name": "0", "configuration_keys": None}], include_synonyms=False)
    return r.results[0].error_code


def p_alter_configs_broker(ctx, who, tenant):
    r = ctx.env.conn(who).call(AlterConfigsRequest, 1, resources=[
        {"resource_type": BROKER_RESOURCE, "resource_name": "0", "configs": []}], validate_only=True)
    return r.responses[0].error_code


def p_incremental_alter_configs_broker(ctx, who, tenant):
    r = ctx.env.conn(who).call(IncrementalAlterConfigsRequest, 0, resources=[
        {"resource_type": BROKER_RESOURCE, "resource_name": "0", "configs": []}], validate_only=True)
    return r.responses[0].error_code


def p_describe_acls(ctx, who, tenant):
    r = ctx.env.conn(who).call(DescribeAclsRequest, 1, resource_type_filter=1, resource_name_filter=None,
                               pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1,
                               permission_type=1)
    note(ctx, "DescribeAcls", who, tenant, r)
    if r.error_code and r.resources:
        return f"error {r.error_code} with {len(r.resources)} resources"
    return r.error_code


def p_create_acls(ctx, who, tenant):
    r = ctx.env.conn(who).call(CreateAclsRequest, 1, creations=[
        {"resource_type": TOPIC_RESOURCE, "resource_name": f"nothing.{who}", "resource_pattern_type": 3,
         "principal": f"User:nobody-{who}", "host": "*", "operation": 3, "permission_type": 3}])
    return r.results[0].error_code


def p_delete_acls(ctx, who, tenant):
    r = ctx.env.conn(who).call(DeleteAclsRequest, 1, filters=[
        {"resource_type_filter": TOPIC_RESOURCE, "resource_name_filter": f"nothing.{who}", "pattern_type_filter": 3,
         "principal_filter": f"User:nobody-{who}", "host_filter": None, "operation": 1, "permission_type": 1}])
    return r.filter_results[0].error_code


def p_describe_client_quotas(ctx, who, tenant):
    r = ctx.env.conn(who).call(DescribeClientQuotasRequest, 0, components=[], strict=False)
    return r.error_code


def p_alter_client_quotas(ctx, who, tenant):
    r = ctx.env.conn(who).call(AlterClientQuotasRequest, 0, entries=[
        {"entity": [{"entity_type": "user", "entity_name": f"nobody-{who}"}],
         "ops": [{"key": "producer_byte_rate", "value": 1048576.0, "remove": False}]}], validate_only=True)
    return r.entries[0].error_code


def p_describe_scram(ctx, who, tenant):
    r = ctx.env.conn(who).call(DescribeUserScramCredentialsRequest, 0, users=None)
    note(ctx, "DescribeUserScramCredentials", who, tenant, r)
    if r.error_code and r.results:
        return f"error {r.error_code} with users {[u.user for u in r.results]}"
    return r.error_code


def p_alter_scram(ctx, who, tenant):
    r = ctx.env.conn(who).call(AlterUserScramCredentialsRequest, 0, deletions=[], upsertions=[
        {"name": f"nobody-{who}", "mechanism": 1, "iterations": 4096, "salt": os.urandom(16),
         "salted_password": os.urandom(32)}])
    return r.results[0].error_code


def p_api_versions(ctx, who, tenant):
    return kproto.api_versions(ctx.env.conn(who), 0).error_code


def can_write_some_topic(who, tenant):
    return who in ("alice", "bob", "admin")


T, G, C, TX = (sk.TOPIC_AUTHORIZATION_FAILED, sk.GROUP_AUTHORIZATION_FAILED, sk.CLUSTER_AUTHORIZATION_FAILED,
               sk.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)

# In order: reads, then writes, then group life cycles, then what destroys resources.
PROBES = [
    Probe("ApiVersions", 18, p_api_versions, 0, {0}, per_tenant=False, allowed_for=lambda w, t: True),
    Probe("Metadata(topic)", 3, p_metadata, T, {0}),
    Probe("Metadata(missing topic)", 3, p_metadata_missing, T, {UNKNOWN_TOPIC_OR_PARTITION}),
    Probe("Metadata(all)", 3, p_metadata_all, 0, {0}, per_tenant=False, allowed_for=lambda w, t: True, listing=True),
    Probe("Produce", 0, p_produce, T, {0}),
    Probe("Fetch", 1, p_fetch, T, {0}),
    Probe("ListOffsets", 2, p_list_offsets, T, {0}),
    Probe("OffsetForLeaderEpoch", 23, p_offset_for_leader_epoch, T, {0}),
    Probe("DescribeProducers", 61, p_describe_producers, T, {0}),
    Probe("DescribeConfigs(topic)", 32, p_describe_configs_topic, T, {0}),
    Probe("AlterConfigs(topic)", 33, p_alter_configs_topic, T, {0}),
    Probe("IncrementalAlterConfigs(topic)", 44, p_incremental_alter_configs_topic, T, {0}),
    Probe("CreateTopics", 19, p_create_topics, T, {0}),
    Probe("CreatePartitions", 37, p_create_partitions, T, {0}),
    Probe("DeleteRecords", 21, p_delete_records, T, {0}),
    Probe("FindCoordinator(group)", 10, p_find_coordinator_group, G, {0}),
    Probe("FindCoordinator(transaction)", 10, p_find_coordinator_txn, TX, {0}),
    Probe("InitProducerId(transactional)", 22, p_init_producer_id_txn, TX, None),
    Probe("InitProducerId(idempotent)", 22, p_init_producer_id, C, {0}, per_tenant=False,
          allowed_for=can_write_some_topic),
    Probe("OffsetCommit", 8, p_offset_commit, G, {0}),
    Probe("OffsetFetch(topics)", 9, p_offset_fetch, G, {0}),
    Probe("OffsetFetch(all)", 9, p_offset_fetch_all, G, {0}, listing=True),
    Probe("JoinGroup", 11, p_join_group, G, {0}),
    Probe("SyncGroup", 14, p_sync_group, G, {0}),
    Probe("Heartbeat", 12, p_heartbeat, G, {0}),
    Probe("DescribeGroups", 15, p_describe_groups, G, {0}),
    Probe("ListGroups", 16, p_list_groups, 0, {0}, per_tenant=False, allowed_for=lambda w, t: True, listing=True),
    Probe("LeaveGroup", 13, p_leave_group, G, {0}),
    Probe("OffsetDelete", 47, p_offset_delete, G, {0}),
    Probe("DeleteGroups", 42, p_delete_groups, G, {0}),
    Probe("DeleteTopics", 20, p_delete_topics, T, {0}),
    Probe("DescribeConfigs(broker)", 32, p_describe_configs_broker, C, {0}, per_tenant=False),
    Probe("AlterConfigs(broker, validate)", 33, p_alter_configs_broker, C, None, per_tenant=False),
    Probe("IncrementalAlterConfigs(broker, validate)", 44, p_incremental_alter_configs_broker, C, None,
          per_tenant=False),
    Probe("DescribeAcls", 29, p_describe_acls, C, {0}, per_tenant=False, listing=True),
    Probe("CreateAcls", 30, p_create_acls, C, {0}, per_tenant=False),
    Probe("DeleteAcls", 31, p_delete_acls, C, {0}, per_tenant=False),
    Probe("DescribeClientQuotas", 48, p_describe_client_quotas, C, {0}, per_tenant=False),
    Probe("AlterClientQuotas(validate)", 49, p_alter_client_quotas, C, None, per_tenant=False),
    Probe("DescribeUserScramCredentials", 50, p_describe_scram, C, {0}, per_tenant=False, listing=True),
    Probe("AlterUserScramCredentials", 51, p_alter_scram, C, {0}, per_tenant=False),
]
# Authentication, not authorization: answered before (and regardless of) any ACL.
NOT_AUTHORIZED_BY_ACLS = {17: "SaslHandshake", 36: "SaslAuthenticate"}


def setup_resources(env: Env, ctx: Ctx):
    """As admin: each tenant's topic (2 partitions, 5 records), per-principal victim
    topics, committed offsets in the tenant's groups (also for the other tenant's topic,
    which the tenant must not see), and the owner's live member in <prefix>g."""
    a = env.conn("admin")
    for tenant, (owner, prefix) in TENANTS.items():
        assert create_topic(a, prefix + "t", 2) == 0
        for who in WHO:
            assert create_topic(a, f"{prefix}victim.{who}", 1) == 0
            for i in range(2):  # DeleteRecords removes the first one
                assert produce(a, f"{prefix}victim.{who}", f"doomed-{i}".encode()) == 0
    for tenant, (owner, prefix) in TENANTS.items():
        for i in range(5):
            assert produce(a, prefix + "t", f"seed-{i}".encode()) == 0
        other = next(p for t, (_, p) in TENANTS.items() if t != tenant)
        for group in [f"{prefix}g.commit"] + [f"{prefix}g.odel.{w}" for w in WHO] + [f"{prefix}g.del.{w}" for w in WHO]:
            assert commit(a, group, prefix + "t", {0: 1, 1: 0}) == {0: 0, 1: 0}, group
        # the admin may commit for the other tenant's topic in this tenant's group
        assert commit(a, f"{prefix}g.commit", other + "t", {0: 2, 1: 0}) == {0: 0, 1: 0}
    for tenant, (owner, prefix) in TENANTS.items():
        c = env.conn(owner)
        wait_until(lambda: metadata(c, [prefix + "t"]).topics[0].error_code == 0, 10,
                   f"{owner} sees {prefix}t (its ACLs in force)")
        code, m = join(c, prefix + "g", prefix + "t")
        assert code == 0 and m is not None, f"{owner} cannot join its own group {prefix}g: {code}"
        assert sync(c, m, prefix + "t") == 0
        ctx.owner_member[tenant] = m


@pytest.mark.timeout(60)
def test_cross_resource_requests_need_both_acls(broker_factory):
    """A group the principal owns with a topic it does not: the topic's partitions fail
    with TOPIC_AUTHORIZATION_FAILED (OffsetCommit, OffsetFetch, OffsetDelete), and a topic
    the principal may not describe reads the same whether it exists or not."""
    env = authz_env(broker_factory)
    try:
        a = env.conn("admin")
        for prefix in ("acme.", "globex."):
            assert create_topic(a, prefix + "t", 2) == 0
        assert commit(a, "acme.g.x", "globex.t", {0: 1, 1: 1}) == {0: 0, 1: 0}
        alice = env.conn("alice")
        wait_until(lambda: metadata(alice, ["acme.t"]).topics[0].error_code == 0, 10, "alice's ACLs in force")
        problems = []

        got = commit(alice, "acme.g.x", "globex.t", {0: 5, 1: 5})
        if got != {0: sk.TOPIC_AUTHORIZATION_FAILED, 1: sk.TOPIC_AUTHORIZATION_FAILED}:
            problems.append(f"OffsetCommit(acme.g.x, globex.t) by alice: {got}")
        r = offset_fetch(alice, "acme.g.x", ["globex.t"])
        got = (r.error_code, sorted((p.partition_index, p.error_code, p.committed_offset) for t in r.topics
                                    for p in t.partitions))
        if got != (0, [(0, T, -1), (1, T, -1)]):
            problems.append(f"OffsetFetch(acme.g.x, [globex.t]) by alice: {got}")
        r = offset_fetch(alice, "acme.g.x", None)
        if "globex." in repr(r) or r.error_code:
            problems.append(f"OffsetFetch(acme.g.x, all) by alice shows globex: {r}")
        r = alice.call(OffsetDeleteRequest, 0, group_id="acme.g.x",
                       topics=[{"name": "globex.t", "partitions": [{"partition_index": 0}]}])
        got = (r.error_code, [p.error_code for t in r.topics for p in t.partitions])
        if got != (0, [T]):
            problems.append(f"OffsetDelete(acme.g.x, globex.t) by alice: {got}")
        # the admin's offsets for globex.t are still there
        r = offset_fetch(a, "acme.g.x", ["globex.t"])
        if sorted(p.committed_offset for t in r.topics for p in t.partitions) != [1, 1]:
            problems.append(f"alice changed offsets she may not touch: {r}")
        # existing and missing topics of another tenant answer alike
        for topic in ("globex.t", "globex.never-made"):
            md = metadata(alice, [topic]).topics[0]
            if (md.error_code, md.partitions) != (T, []):
                problems.append(f"Metadata([{topic}]) by alice: error {md.error_code}, partitions {md.partitions}")
            code = kproto.list_offsets_v1(alice, topic, 0, kproto.LATEST)[0]
            if code != T:
                problems.append(f"ListOffsets({topic}) by alice: {code}")
        assert not problems, "\n".join(problems)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_deny_beats_allow(broker_factory):
    env = authz_env(broker_factory)
    try:
        a = env.conn("admin")
        for topic in ("acme.t", "acme.other"):
            assert create_topic(a, topic, 1) == 0
        alice = env.conn("alice")
        wait_until(lambda: produce(alice, "acme.t") == 0, 10, "alice may write acme.t")

        sk.create_acl(env.broker, "User:alice", "write", topic="acme.t", deny=True)
        # the same connection, no reconnect: the DENY applies from a following request on
        wait_until(lambda: produce(alice, "acme.t") == T, 5, "alice's produce to acme.t refused by the DENY")
        assert produce(alice, "acme.other") == 0, "the DENY on acme.t must not touch acme.other"
        assert kproto.fetch_v4(alice, "acme.t", 0, 0).error_code == 0, "DENY write must not deny read"
        assert produce(env.conn("admin"), "acme.t") == 0, "super users are not subject to ACLs"

        # a real client sees the same
        p = Producer(env.rdkafka("alice", **{"message.timeout.ms": 15000}))
        log = DeliveryLog()
        p.produce("acme.t", value=b"denied", partition=0, on_delivery=log.callback(0))
        p.produce("acme.other", value=b"fine", partition=0, on_delivery=log.callback(1))
        p.flush(20)
        assert 0 in log.errors and log.errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, log.errors
        assert 1 in log.ok, log.errors

        # a DENY on a prefix with ALL beats the prefixed ALLOW ALL for every operation
        sk.create_acl(env.broker, "User:alice", "all", topic="acme.oth", pattern="prefixed", deny=True)
        wait_until(lambda: metadata(alice, ["acme.other"]).topics[0].error_code == T, 5,
                   "a prefixed DENY ALL hides acme.other from alice")
        assert produce(alice, "acme.other") == T

        sk.cli(env.broker, "acl", "delete", "--principal", "User:alice", "--topic", "acme.t", "--deny")
        wait_until(lambda: produce(alice, "acme.t") == 0, 5, "alice may write acme.t again once the DENY is gone")
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_acl_changes_apply_without_reconnecting(broker_factory):
    env = authz_env(broker_factory)
    try:
        a = env.conn("admin")
        assert create_topic(a, "shared.t", 1) == 0
        bob = env.conn("bob")
        port = bob.sock.getsockname()
        assert produce(bob, "shared.t") == T
        assert kproto.fetch_v4(bob, "shared.t", 0, 0).error_code == T

        t0 = time.monotonic()
        admin = AdminClient(env.rdkafka("admin"))
        binding = AclBinding(ResourceType.TOPIC, "shared.t", ResourcePatternType.LITERAL, "User:bob", "*",
                             AclOperation.WRITE, AclPermissionType.ALLOW)
        admin.create_acls([binding])[binding].result(timeout=30)
        wait_until(lambda: produce(bob, "shared.t") == 0, 3, "bob's write allowed on his open connection")
        granted = time.monotonic() - t0
        assert kproto.fetch_v4(bob, "shared.t", 0, 0).error_code == T, "WRITE must not grant READ"
        assert metadata(bob, ["shared.t"]).topics[0].error_code == 0, "WRITE implies DESCRIBE"

        t0 = time.monotonic()
        flt = AclBindingFilter(ResourceType.TOPIC, "shared.t", ResourcePatternType.LITERAL, "User:bob", None,
                               AclOperation.ANY, AclPermissionType.ANY)
        deleted = admin.delete_acls([flt])[flt].result(timeout=30)
        assert [(d.name, d.principal) for d in deleted] == [("shared.t", "User:bob")], deleted
        wait_until(lambda: produce(bob, "shared.t") == T, 3, "bob's write refused again on his open connection")
        revoked = time.monotonic() - t0
        assert bob.sock.getsockname() == port
        print(f"\nACL grant in force after {granted:.3f}s, revocation after {revoked:.3f}s (same connection)")
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_implied_operations_and_wildcards(broker_factory):
    """WRITE implies DESCRIBE but not READ; ALTER_CONFIGS implies DESCRIBE_CONFIGS but not
    DESCRIBE; the literal name `*` matches every topic; User:* is everyone."""
    env = authz_env(broker_factory)
    try:
        for user in ("carol", "dave"):
            sk.create_user(env.broker, user, user + "-pw")
            env.passwords[user] = user + "-pw"
        a = env.conn("admin")
        for topic in ("impl.w", "impl.c", "impl.any"):
            assert create_topic(a, topic, 1) == 0
        sk.create_acl(env.broker, "User:carol", "write", topic="impl.w")
        sk.create_acl(env.broker, "User:carol", "alter_configs", topic="impl.c")
        sk.create_acl(env.broker, "User:dave", "describe", topic="*")
        sk.create_acl(env.broker, "User:*", "read", topic="impl.any")
        carol, dave, anon = env.conn("carol"), env.conn("dave"), env.conn("anonymous")

        def describe_configs(c, topic):
            return c.call(DescribeConfigsRequest, 1, resources=[
                {"resource_type": TOPIC_RESOURCE, "resource_name": topic, "configuration_keys": None}],
                include_synonyms=False).results[0].error_code

        want = {
            "carol Metadata(impl.w)": (lambda: metadata(carol, ["impl.w"]).topics[0].error_code, 0),
            "carol ListOffsets(impl.w)": (lambda: kproto.list_offsets_v1(carol, "impl.w", 0, -1)[0], 0),
            "carol Produce(impl.w)": (lambda: produce(carol, "impl.w"), 0),
            "carol Fetch(impl.w)": (lambda: kproto.fetch_v4(carol, "impl.w", 0, 0).error_code, T),
            "carol DescribeConfigs(impl.c)": (lambda: describe_configs(carol, "impl.c"), 0),
            "carol Metadata(impl.c)": (lambda: metadata(carol, ["impl.c"]).topics[0].error_code, T),
            "carol DescribeConfigs(impl.w)": (lambda: describe_configs(carol, "impl.w"), T),
            "dave Metadata(impl.w, impl.c)": (lambda: sorted((t.name, t.error_code) for t in
                                                             metadata(dave, ["impl.w", "impl.c"]).topics),
                                              [("impl.c", 0), ("impl.w", 0)]),
            "dave Produce(impl.w)": (lambda: produce(dave, "impl.w"), T),
            "anonymous Fetch(impl.any)": (lambda: kproto.fetch_v4(anon, "impl.any", 0, 0).error_code, 0),
            "bob Fetch(impl.any)": (lambda: kproto.fetch_v4(env.conn("bob"), "impl.any", 0, 0).error_code, 0),
            "anonymous Produce(impl.any)": (lambda: produce(anon, "impl.any"), T),
        }
        last = {}

        def all_match():
            for name, (f, _) in want.items():
                last[name] = f()
            return all(last[n] == w for n, (_, w) in want.items())
        try:
            wait_until(all_match, 5, "implied operations and wildcards in force")
        except AssertionError:
            raise AssertionError("\n".join(f"{n}: want {w}, got {last.get(n)}" for n, (_, w) in want.items()
                                           if last.get(n) != w)) from None
        dave_sees = {t.name for t in metadata(dave, None).topics}
        assert {"impl.w", "impl.c", "impl.any"} <= dave_sees, dave_sees
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_acls_made_either_way_are_listed_both_ways(broker_factory):
    env = authz_env(broker_factory)
    try:
        admin = AdminClient(env.rdkafka("admin"))
        flt = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                               AclPermissionType.ANY)
        seen = {(b.restype, b.name, b.resource_pattern_type, b.principal, b.operation, b.permission_type)
                for b in admin.describe_acls(flt).result(timeout=30)}
        want = set()
        for owner, prefix in TENANTS.values():
            for rtype in (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID):
                want.add((rtype, prefix, ResourcePatternType.PREFIXED, f"User:{owner}", AclOperation.ALL,
                          AclPermissionType.ALLOW))
        assert seen == want, f"DescribeAcls: extra {seen - want}, missing {want - seen}"

        rows = sk.cli(env.broker, "acl", "list", "--json").stdout
        for owner, prefix in TENANTS.values():
            assert f"User:{owner}" in rows and prefix in rows, rows
        # the CLI's filter: only bob's
        only_bob = sk.cli(env.broker, "acl", "list", "--principal", "User:bob", "--json").stdout
        assert "User:alice" not in only_bob and "globex." in only_bob, only_bob

        # bob (no cluster ACL) may neither read nor change ACLs through the Kafka API.
        # librdkafka drops DescribeAcls' top-level error code (rd_kafka_DescribeAclsResponse_parse
        # returns NO_ERROR whatever the broker said), so confluent-kafka shows bob an empty
        # list; the raw matrix above checks the code (31) itself.  What matters here: nothing
        # listed.
        bob_admin = AdminClient(env.rdkafka("bob"))
        assert bob_admin.describe_acls(flt).result(timeout=30) == []
        binding = AclBinding(ResourceType.TOPIC, "acme.", ResourcePatternType.PREFIXED, "User:bob", "*",
                             AclOperation.ALL, AclPermissionType.ALLOW)
        with pytest.raises(KafkaException) as ei:
            bob_admin.create_acls([binding])[binding].result(timeout=30)
        err = ei.value.args[0]
        assert err.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, err
        assert len(admin.describe_acls(flt).result(timeout=30)) == len(want), "bob's refused ACL was stored"
    finally:
        env.close()


@pytest.mark.timeout(90)
def test_every_api_allowed_exactly_for_its_owner(broker_factory):
    env = authz_env(broker_factory)
    ctx = Ctx(env)
    try:
        setup_resources(env, ctx)

        advertised = set(env.broker.api_ranges)
        covered = {p.api for p in PROBES}
        missing = advertised - covered - set(NOT_AUTHORIZED_BY_ACLS)
        assert not missing, f"the broker advertises APIs the matrix does not probe: {sorted(missing)}"

        rows = []  # (probe, who, tenant, expected set, got)
        for probe in PROBES:
            if probe.api not in advertised:
                continue
            for tenant in (TENANTS if probe.per_tenant else [None]):
                for who in WHO:
                    allowed = probe.allowed_for(who, tenant)
                    want = probe.allowed if allowed else {probe.deny}
                    try:
                        got = probe.run(ctx, who, tenant)
                    except (OSError, ConnectionError, ValueError, AssertionError) as e:
                        got = f"{type(e).__name__}: {e}"
                        env.conn(who, fresh=True)
                    rows.append((probe, who, tenant, allowed, want, got))

        # the owners' live members were untouched by outsiders' Sync/Heartbeat/Leave
        for tenant, (owner, prefix) in TENANTS.items():
            m = ctx.owner_member[tenant]
            code = heartbeat(env.conn(owner), m)
            rows.append((Probe("Heartbeat(owner after outsiders)", 12, None, G, {0}), owner, tenant, True, {0}, code))
        # deletions by outsiders left the resources in place; the owners' went
        a = env.conn("admin")
        names = {t.name for t in metadata(a, None).topics}
        groups = {g.group_id for g in a.call(ListGroupsRequest, 4, states_filter=[]).groups}
        for tenant, (owner, prefix) in TENANTS.items():
            for who in WHO:
                gone = owns(who, tenant)
                victim, del_group = f"{prefix}victim.{who}", f"{prefix}g.del.{who}"
                rows.append((Probe("victim topic after DeleteTopics", 20, None, T), who, tenant, gone,
                             {"gone" if gone else "present"}, "present" if victim in names else "gone"))
                rows.append((Probe("group after DeleteGroups", 42, None, G), who, tenant, gone,
                             {"gone" if gone else "present"}, "present" if del_group in groups else "gone"))
                # the topic made by CreateTopics exists exactly for the owners
                made = f"{prefix}new.{who}"
                rows.append((Probe("topic after CreateTopics", 19, None, T), who, tenant, gone,
                             {"present" if gone else "absent"}, "present" if made in names else "absent"))

        # print the matrix
        unauthorized_successes, wrong = 0, []
        print(f"\n{'request':44} {'principal':10} {'tenant':7} {'want':>12} {'got':>12}")
        for probe, who, tenant, allowed, want, got in rows:
            ok = got in want if want is not None else (isinstance(got, int) and got not in sk.AUTH_ERRORS)
            if not allowed and not ok and (got == 0 or (isinstance(got, int) and got not in sk.AUTH_ERRORS)
                                           or got in ("present", "gone")):
                unauthorized_successes += 1
            if not ok:
                wrong.append((probe.name, who, tenant, allowed, want, got))
            show_want = "allowed" if want is None else "/".join(str(w) for w in sorted(want, key=str))
            print(f"{probe.name:44} {who:10} {str(tenant):7} {show_want:>12} {str(got)[:60]:>12}"
                  f"{'' if ok else '   <-- WRONG'}")

        # leaks: other tenants' names in listing answers
        leaks = []
        for name, who, tenant, text in ctx.answers:
            if who == "admin":
                continue
            foreign = [p for t, (o, p) in TENANTS.items() if o != who]
            for prefix in foreign:
                if f"'{prefix}" in text:
                    leaks.append((name, who, prefix, text[:400]))
        # owners do see their own names in the lists
        visible = []
        for name, who, tenant, text in ctx.answers:
            if who in ("alice", "bob"):
                prefix = next(p for t, (o, p) in TENANTS.items() if o == who)
                if name in ("Metadata(all)", "ListGroups") and f"'{prefix}" not in text:
                    visible.append((name, who, text[:300]))
                if name == "OffsetFetch(all)" and tenant == next(t for t, (o, _) in TENANTS.items() if o == who) \
                        and f"'{prefix}t'" not in text:
                    visible.append((name, who, text[:300]))
        print(f"\nunauthorized successes: {unauthorized_successes}")
        print(f"cross-tenant names leaked: {len(leaks)}")
        for leak in leaks:
            print("  LEAK", leak)
        problems = [f"{n} by {w} on {t}: want {'allowed ' if a else ''}{sorted(x, key=str) if x else 'no auth error'}, "
                    f"got {g}" for n, w, t, a, x, g in wrong]
        problems += [f"{n} answer to {w} leaks {p}…: {txt}" for n, w, p, txt in leaks]
        problems += [f"{n} answer to {w} lacks its own names: {txt}" for n, w, txt in visible]
        assert unauthorized_successes == 0 and not leaks and not problems, \
            f"{len(problems)} problems ({unauthorized_successes} unauthorized successes, {len(leaks)} leaks):\n" \
            + "\n".join(problems)
    finally:
        env.close()
