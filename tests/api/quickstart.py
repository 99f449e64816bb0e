"""Azure Batch's Python quickstart, run against drover-api with the official SDK.

Usage: python quickstart.py ENDPOINT ACCOUNT KEY
Run with azure-batch 15.x (BatchClient) or 14.x (BatchServiceClient); prints one line per
check and exits non-zero on the first that fails.
"""

import sys
import time

endpoint, account, key = sys.argv[1:4]


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        sys.exit(1)


def until(what, probe, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    check(what, False, "timed out")


def v15():
    from azure.batch import BatchClient, models
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ResourceExistsError

    client = BatchClient(endpoint, AzureNamedKeyCredential(account, key))
    image = models.BatchVmImageReference(publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts", version="latest")
    client.create_pool(models.BatchPoolCreateOptions(
        id="qs-pool", vm_size="standard_d2s_v3", target_dedicated_nodes=1, task_slots_per_node=4,
        virtual_machine_configuration=models.VirtualMachineConfiguration(image_reference=image, node_agent_sku_id="batch.node.ubuntu 22.04")))
    pool = client.get_pool("qs-pool")
    check("the pool reads back", pool.id == "qs-pool" and pool.task_slots_per_node == 4, pool)
    client.create_job(models.BatchJobCreateOptions(id="qs-job", pool_info=models.BatchPoolInfo(pool_id="qs-pool")))
    try:
        client.create_job(models.BatchJobCreateOptions(id="qs-job", pool_info=models.BatchPoolInfo(pool_id="qs-pool")))
        check("a second job with the same id is refused", False)
    except (ResourceExistsError, HttpResponseError) as e:
        check("a second job with the same id is refused (JobExists)", e.error is not None and e.error.code == "JobExists", e)

    tasks = [models.BatchTaskCreateOptions(id=f"t{i:03}", command_line=f"/bin/sh -c 'echo hello from task {i}'") for i in range(250)]
    result = client.create_tasks("qs-job", tasks)
    added = [r for r in result.result_values if r.status == "success"]
    check("250 tasks are added (the SDK splits them by 100)", len(added) == 250, len(added))

    # 1.5 MB of tasks in one request is too large: the SDK splits it on RequestBodyTooLarge.
    big = [models.BatchTaskCreateOptions(id=f"big{i:03}", command_line="/bin/true",
                                         environment_settings=[models.EnvironmentSetting(name="PAD", value="x" * 15000)]) for i in range(100)]
    client.create_job(models.BatchJobCreateOptions(id="qs-big", pool_info=models.BatchPoolInfo(pool_id="qs-pool")))
    result = client.create_tasks("qs-big", big)
    check("a body over 1 MB is split by the SDK on RequestBodyTooLarge", sum(r.status == "success" for r in result.result_values) == 100, result)
    client.begin_delete_job("qs-big", polling_interval=1).result()
    page = list(client.list_tasks("qs-job", max_results=100))
    check("list_tasks follows odata.nextLink across pages", len(page) == 250, len(page))

    def all_done():
        tasks = list(client.list_tasks("qs-job"))
        return all(t.state == models.BatchTaskState.COMPLETED for t in tasks) and tasks
    done = until("every task completes", all_done)
    check("every task ran on a node", all(t.node_info and t.node_info.node_id for t in done))
    check("every task succeeded", all(t.execution_info.exit_code == 0 for t in done))

    out = b"".join(client.download_task_file("qs-job", "t007", "stdout.txt")).decode()
    check("stdout.txt of a task reads back", out == "hello from task 7\n", repr(out))
    picked = list(client.list_tasks("qs-job", filter="startswith(id, 't01') and state eq 'completed'", select=["id", "state"], max_results=4))
    check("$filter and $select across pages", sorted(t.id for t in picked) == [f"t{i:03}" for i in range(10, 20)]
          and all(t.execution_info is None for t in picked), [t.id for t in picked])
    try:
        list(client.list_tasks("qs-job", filter="state is 'x'"))
        check("a bad $filter is refused", False)
    except HttpResponseError as e:
        check("a bad $filter is refused (InvalidQueryParameterValue)", e.error.code == "InvalidQueryParameterValue", e)

    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotModifiedError
    job = client.get_job("qs-job")
    try:
        client.get_job("qs-job", etag=job.etag, match_condition=MatchConditions.IfModified)
        check("a current copy is not sent again", False)
    except (ResourceNotModifiedError, ResourceModifiedError) as e:  # 15.1.0 raises the latter for a 304
        check("a current copy is not sent again (304)", e.status_code == 304, e)
    try:
        client.begin_delete_job("qs-job", etag="0x0000", match_condition=MatchConditions.IfNotModified).result()
        check("a delete with a stale ETag is refused", False)
    except ResourceModifiedError as e:
        check("a delete with a stale ETag is refused (412 ConditionNotMet)", e.error.code == "ConditionNotMet", e)
    counts = client.get_job_task_counts("qs-job")
    check("task counts", counts.task_counts.succeeded == 250, counts)
    stats = client.get_job("qs-job", expand=["stats"]).job_statistics
    check("a job's statistics", stats.succeeded_tasks_count == 250 and stats.failed_tasks_count == 0
          and stats.wall_clock_time.total_seconds() > 0 and stats.url.endswith("/jobs/qs-job"), stats)
    check("statistics only when asked for", client.get_job("qs-job").job_statistics is None)
    task_stats = client.get_task("qs-job", "t007", expand=["stats"]).task_statistics
    check("a task's statistics", task_stats.wall_clock_time.total_seconds() > 0, task_stats)
    client.update_job("qs-job", models.BatchJobUpdateOptions(priority=7, max_parallel_tasks=3))
    job = client.get_job("qs-job")
    check("a job is patched", job.priority == 7 and job.max_parallel_tasks == 3, job)
    task = client.get_task("qs-job", "t007")
    task.constraints = models.BatchTaskConstraints(max_task_retry_count=2)
    client.replace_task("qs-job", "t007", task)
    task = client.get_task("qs-job", "t007")
    check("a task's constraints are updated", task.constraints.max_task_retry_count == 2, task)
    files = sorted(f.name for f in client.list_task_files("qs-job", "t007"))
    check("a task's files are listed (its directory, kept by its node)", files == ["stderr.txt", "stdout.txt", "wd"], files)
    check("a task has no subtasks", list(client.list_subtasks("qs-job", "t007")) == [])
    check("applications are listed", list(client.list_applications()) == [])

    # A pool patched, then its properties replaced.
    client.update_pool("qs-pool", models.BatchPoolUpdateOptions(
        metadata=[models.BatchMetadataItem(name="team", value="render")],
        start_task=models.BatchStartTask(command_line="/bin/true")))
    pool = client.get_pool("qs-pool")
    check("a pool is patched", [(m.name, m.value) for m in pool.metadata] == [("team", "render")]
          and pool.start_task.command_line == "/bin/true", pool)
    client.replace_pool_properties("qs-pool", models.BatchPoolReplaceOptions(application_package_references=[], metadata=[]))
    pool = client.get_pool("qs-pool")
    check("a pool's properties are replaced", not pool.metadata and pool.start_task is None, pool)

    # A job disabled and enabled; a failed task reactivated, then deleted; a node's scheduling.
    client.create_task("qs-job", models.BatchTaskCreateOptions(id="fails", command_line="/bin/false"))
    completed = lambda t: client.get_task("qs-job", t).state == models.BatchTaskState.COMPLETED
    until("the failing task completes", lambda: completed("fails"))
    first = client.get_task("qs-job", "fails").execution_info.start_time
    client.begin_disable_job("qs-job", models.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=1).result()
    check("a job is disabled", client.get_job("qs-job").state == models.BatchJobState.DISABLED)
    try:
        client.reactivate_task("qs-job", "fails")
        check("a task of a disabled job is not reactivated", False)
    except HttpResponseError as e:
        check("a task of a disabled job is not reactivated (409)", e.status_code == 409, e)
    client.begin_enable_job("qs-job", polling_interval=1).result()
    check("a job is enabled", client.get_job("qs-job").state == models.BatchJobState.ACTIVE)
    client.reactivate_task("qs-job", "fails")
    until("the reactivated task runs again", lambda: completed("fails")
          and client.get_task("qs-job", "fails").execution_info.start_time > first)
    client.delete_task("qs-job", "fails")
    try:
        client.get_task("qs-job", "fails")
        check("a deleted task is gone", False)
    except ResourceNotFoundError as e:
        check("a deleted task is gone (TaskNotFound)", e.error.code == "TaskNotFound", e)
    node = list(client.list_nodes("qs-pool"))[0].id
    counts = [c for c in client.list_pool_node_counts() if c.pool_id == "qs-pool"]
    check("a pool's node counts", len(counts) == 1 and counts[0].dedicated.total == 1
          and counts[0].dedicated.idle + counts[0].dedicated.running == 1, counts)
    client.disable_node_scheduling("qs-pool", node, models.BatchNodeDisableSchedulingOptions(node_disable_scheduling_option="taskcompletion"))
    check("a node's scheduling is disabled", client.get_node("qs-pool", node).scheduling_state == "disabled")
    client.enable_node_scheduling("qs-pool", node)
    check("a node's scheduling is enabled", client.get_node("qs-pool", node).scheduling_state == "enabled")

    # A running task is terminated; a formula is evaluated without acting.
    client.create_task("qs-job", models.BatchTaskCreateOptions(id="long", command_line="/bin/sh -c 'echo note > note.txt; echo started; exec sleep 600'"))
    until("the long task runs", lambda: client.get_task("qs-job", "long").state == models.BatchTaskState.RUNNING)
    live = lambda **range: b"".join(client.download_task_file("qs-job", "long", "stdout.txt", **range)).decode()
    until("its output so far reads while it runs", lambda: live() == "started\n")
    check("a range of it reads", live(ocp_range="bytes=2-4") == "art", live(ocp_range="bytes=2-4"))
    # Its directory, listed and changed through its node's file service; the node's files.
    files = {f.name: f for f in client.list_task_files("qs-job", "long", recursive=True)}
    check("a running task's files are listed", {"stdout.txt", "wd", "wd/note.txt"} <= set(files)
          and files["wd"].is_directory and files["stdout.txt"].properties.content_length == 8, sorted(files))
    check("a file of its directory reads", b"".join(client.download_task_file("qs-job", "long", "wd/note.txt")) == b"note\n")
    client.delete_task_file("qs-job", "long", "wd/note.txt")
    check("a deleted task file is gone", "wd/note.txt" not in {f.name for f in client.list_task_files("qs-job", "long", recursive=True)})
    on = client.get_task("qs-job", "long").node_info.node_id
    node_files = [f.name for f in client.list_node_files("qs-pool", on, recursive=True)]
    check("a node's files are listed", "jobs/qs-job/long/stdout.txt" in node_files, node_files[:20])
    check("a node's file reads", b"".join(client.download_node_file("qs-pool", on, "jobs/qs-job/long/stdout.txt")) == b"started\n")
    props = client.get_node_file_properties("qs-pool", on, "jobs/qs-job/long/stdout.txt")
    check("a node file's properties", props is not None)
    try:
        client.delete_node_file("qs-pool", on, "jobs/qs-job/long/wd/missing")
        check("a missing node file is not deleted", False)
    except ResourceNotFoundError as e:
        check("a missing node file is not deleted (FileNotFound)", e.error.code == "FileNotFound", e)
    # A task that swaps its stdout.txt for a link out of its directory gets nothing served.
    client.create_task("qs-job", models.BatchTaskCreateOptions(id="sneaky", command_line="/bin/sh -c 'ln -sf /etc/passwd ../stdout.txt; echo linked >&2; exec sleep 600'"))
    until("the sneaky task links", lambda: client.get_task("qs-job", "sneaky").state == models.BatchTaskState.RUNNING
          and b"".join(client.download_task_file("qs-job", "sneaky", "stderr.txt")) == b"linked\n")
    try:
        leaked = b"".join(client.download_task_file("qs-job", "sneaky", "stdout.txt"))
        check("a link out of the task directory is not followed", b"root:" not in leaked, leaked[:40])
    except HttpResponseError as e:
        check("a link out of the task directory is not followed (refused)", e.status_code in (400, 404), e)
    client.terminate_task("qs-job", "sneaky")
    client.terminate_task("qs-job", "long")
    long = client.get_task("qs-job", "long")
    check("a terminated task has completed, failed", long.state == models.BatchTaskState.COMPLETED
          and long.execution_info.result == models.BatchTaskExecutionResult.FAILURE, long)
    run = client.evaluate_pool_auto_scale("qs-pool", models.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 2;"))
    check("a formula evaluates", run.error is None and "$TargetDedicatedNodes=2" in (run.results or ""), run)
    client.begin_resize_pool("qs-pool", models.BatchPoolResizeOptions(target_dedicated_nodes=2), polling_interval=1).result()
    pool = client.get_pool("qs-pool")
    check("a resize brings a second node", pool.current_dedicated_nodes == 2 and pool.allocation_state == "steady", pool)
    first, second = sorted(n.id for n in client.list_nodes("qs-pool"))
    booted = client.get_node("qs-pool", second).last_boot_time
    # (15.1.0 fails to send a reboot without options, and does not export their model.)
    from azure.batch.models._models import BatchNodeRebootOptions
    client.begin_reboot_node("qs-pool", second, BatchNodeRebootOptions(node_reboot_kind="requeue"), polling_interval=1).result()
    until("the rebooted node is back under its id", lambda: any(
        n.id == second and n.state == "idle" and n.last_boot_time > booted for n in client.list_nodes("qs-pool")))
    client.begin_remove_nodes("qs-pool", models.BatchNodeRemoveOptions(node_ids=[second]), polling_interval=1).result()
    left = [n.id for n in client.list_nodes("qs-pool")]
    check("a removed node goes, and no other", left == [first], left)

    # A job schedule through its life.
    import datetime
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    client.create_job_schedule(models.BatchJobScheduleCreateOptions(
        id="qs-schedule", schedule=models.BatchJobScheduleConfiguration(do_not_run_until=later, recurrence_interval=datetime.timedelta(hours=2)),
        job_specification=models.BatchJobSpecification(pool_info=models.BatchPoolInfo(pool_id="qs-pool"))))
    check("a schedule is created", client.get_job_schedule("qs-schedule").state == models.BatchJobScheduleState.ACTIVE)
    client.disable_job_schedule("qs-schedule")
    check("a schedule is disabled", client.get_job_schedule("qs-schedule").state == models.BatchJobScheduleState.DISABLED)
    client.enable_job_schedule("qs-schedule")
    client.begin_terminate_job_schedule("qs-schedule", polling_interval=1).result()
    check("a schedule is terminated", client.get_job_schedule("qs-schedule").state == models.BatchJobScheduleState.COMPLETED)
    client.begin_delete_job_schedule("qs-schedule", polling_interval=1).result()
    try:
        # (15.1.0's job_schedule_exists raises on the 404 it is meant to return False for.)
        client.get_job_schedule("qs-schedule")
        check("a schedule is deleted", False)
    except ResourceNotFoundError:
        check("a schedule is deleted", True)

    try:
        client.get_job("no-such-job")
        check("a missing job is 404", False)
    except ResourceNotFoundError as e:
        check("a missing job is 404 (JobNotFound)", e.error is not None and e.error.code == "JobNotFound", e)

    client.begin_delete_job("qs-job", polling_interval=1).result()
    try:
        client.get_job("qs-job")
        check("the deleted job is gone", False)
    except ResourceNotFoundError:
        check("the deleted job is gone", True)
    client.begin_delete_pool("qs-pool", polling_interval=1).result()
    check("the deleted pool is gone", not any(p.id == "qs-pool" for p in client.list_pools()))

    bad = BatchClient(endpoint, AzureNamedKeyCredential(account, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))
    try:
        bad.get_pool("qs-pool")
        check("a request signed with another key is refused", False)
    except HttpResponseError as e:
        check("a request signed with another key is refused (403)", e.status_code == 403, e)


def v14():
    import azure.batch.models as m
    from azure.batch import BatchServiceClient
    from azure.batch.batch_auth import SharedKeyCredentials

    client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
    image = m.ImageReference(publisher="canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts", version="latest")
    client.pool.add(m.PoolAddParameter(
        id="qs-pool", vm_size="standard_d2s_v3", target_dedicated_nodes=1, task_slots_per_node=4,
        virtual_machine_configuration=m.VirtualMachineConfiguration(image_reference=image, node_agent_sku_id="batch.node.ubuntu 22.04")))
    pool = client.pool.get("qs-pool")
    check("the pool reads back", pool.id == "qs-pool" and pool.task_slots_per_node == 4, pool)
    client.job.add(m.JobAddParameter(id="qs-job", pool_info=m.PoolInformation(pool_id="qs-pool")))
    try:
        client.job.add(m.JobAddParameter(id="qs-job", pool_info=m.PoolInformation(pool_id="qs-pool")))
        check("a second job with the same id is refused", False)
    except m.BatchErrorException as e:
        check("a second job with the same id is refused (JobExists)", e.error.code == "JobExists", e)

    tasks = [m.TaskAddParameter(id=f"t{i:03}", command_line=f"/bin/sh -c 'echo hello from task {i}'") for i in range(250)]
    result = client.task.add_collection("qs-job", tasks)
    added = [r for r in result.value if r.status == m.TaskAddStatus.success]
    check("250 tasks are added (the SDK splits them by 100)", len(added) == 250, len(added))
    page = list(client.task.list("qs-job", task_list_options=m.TaskListOptions(max_results=100)))
    check("task.list follows odata.nextLink across pages", len(page) == 250, len(page))

    def all_done():
        tasks = list(client.task.list("qs-job"))
        return all(t.state == m.TaskState.completed for t in tasks) and tasks
    done = until("every task completes", all_done)
    check("every task ran on a node", all(t.node_info and t.node_info.node_id for t in done))
    check("every task succeeded", all(t.execution_info.exit_code == 0 for t in done))
    out = b"".join(client.file.get_from_task("qs-job", "t007", "stdout.txt")).decode()
    check("stdout.txt of a task reads back", out == "hello from task 7\n", repr(out))
    counts = client.job.get_task_counts("qs-job")
    check("task counts", counts.task_counts.succeeded == 250, counts)
    try:
        client.job.get("no-such-job")
        check("a missing job is 404", False)
    except m.BatchErrorException as e:
        check("a missing job is 404 (JobNotFound)", e.error.code == "JobNotFound", e)
    client.job.delete("qs-job")
    client.pool.delete("qs-pool")
    check("the deleted pool is gone", not any(p.id == "qs-pool" for p in client.pool.list()))
    bad = BatchServiceClient(SharedKeyCredentials(account, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="), batch_url=endpoint)
    try:
        bad.pool.get("qs-pool")
        check("a request signed with another key is refused", False)
    except m.BatchErrorException as e:
        check("a request signed with another key is refused (403)", e.response.status_code == 403, e)


import importlib.metadata

if importlib.metadata.version("azure-batch").startswith("14."):
    v14()
else:
    v15()
print("quickstart passed")
