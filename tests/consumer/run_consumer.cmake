# Installs the quarry build at QUARRY_BINARY_DIR into WORK_DIR/prefix, then builds and runs
# a consumer of each component (engine, loop) against that prefix with find_package(quarry).
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${CMAKE_COMMAND} --install "${QUARRY_BINARY_DIR}" --prefix "${WORK_DIR}/prefix")
if(EXISTS "${WORK_DIR}/prefix/include/quarry/detail")
  message(FATAL_ERROR "include/quarry/detail was installed; no public header includes it")
endif()
foreach(component engine loop)
  run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/build-${component}" -G "${CMAKE_GENERATOR}"
      "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" "-DQUARRY_COMPONENT=${component}")
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/build-${component}")
  run("${WORK_DIR}/build-${component}/consumer")
endforeach()
# The installed quarry hands the loop's commands to the installed quarry-loop.
run("${WORK_DIR}/prefix/bin/quarry" --version)
run("${WORK_DIR}/prefix/bin/quarry" report --help)
